// Ferry for Svelte 5 (`@ferry-sync/client/svelte`): live queries, the sync
// status and the conflict inbox as readable stores, usable with `$` in
// templates and, through Svelte's `fromStore`, with runes. Each is a thin
// adapter over the client; a row that did not change is the same object in
// the next result, so a keyed `{#each rows as row (row.id)}` leaves it be.
//
//     <script>
//       import { query } from "@ferry-sync/client/svelte";
//       const open = query(ferry, space, "todos", { where: [["done", "=", false]], orderBy: ["title"] });
//     </script>
//     {#each $open.rows as todo (todo.id)}<li>{todo.fields.title}</li>{/each}

import type { Readable } from "svelte/store";

import type {
  CollectionOf,
  Ferry,
  FieldsOf,
  LocalRecord,
  Query,
  QueryResult,
  StoredConflict,
  SyncStatus,
} from "./index.js";

/** A live query's result as a store: the current one at once, then each new one. */
export function query<S extends object, C extends CollectionOf<S>>(
  ferry: Ferry<S>,
  space: string,
  collection: C,
  q: Query<FieldsOf<S, C>> = {},
): Readable<QueryResult<LocalRecord<FieldsOf<S, C>>>> {
  const live = ferry.query(space, collection, q);
  return {
    subscribe(run) {
      const stop = live.subscribe(run);
      run(live.getSnapshot());
      return stop;
    },
  };
}

/** The sync status as a store. */
export function syncStatus(ferry: Ferry<object>): Readable<Readonly<SyncStatus>> {
  return { subscribe: (run) => ferry.onStatus(() => run(ferry.statusSnapshot())) };
}

/** The conflict inbox (of `space`, or all of it) as a store, read again as records change and syncs end. */
export function conflicts(ferry: Ferry<object>, space?: string): Readable<readonly StoredConflict[]> {
  return {
    subscribe(run) {
      let live = true;
      run([]);
      const read = () => {
        void ferry.conflicts().then((all) => {
          if (live) run(space === undefined ? all : all.filter((c) => c.space === space));
        });
      };
      const stops = [ferry.subscribe(read), ferry.onStatus(read)];
      return () => {
        live = false;
        for (const stop of stops) stop();
      };
    },
  };
}
