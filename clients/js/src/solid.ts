// Ferry for SolidJS (`@ferry-sync/client/solid`): live queries, the sync
// status and the conflict inbox as signals. Each is a thin adapter over the
// client; a row that did not change is the same object in the next result,
// so `<For>` keeps its DOM. Arguments may be accessors: the query follows
// them.
//
//     const open = createQuery(ferry, space, "todos", () => ({ where: [["done", "=", show()]] }));
//     <For each={open().rows}>{(todo) => <li>{todo.fields.title}</li>}</For>

import { type Accessor, createMemo, createRenderEffect, createSignal, onCleanup } from "solid-js";

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

type MaybeAccessor<T> = T | Accessor<T>;

function read<T>(v: MaybeAccessor<T>): T {
  return typeof v === "function" ? (v as Accessor<T>)() : v;
}

/** A live query's current result as a signal. */
export function createQuery<S extends object, C extends CollectionOf<S>>(
  ferry: Ferry<S>,
  space: MaybeAccessor<string>,
  collection: MaybeAccessor<C>,
  query: MaybeAccessor<Query<FieldsOf<S, C>>> = {},
): Accessor<QueryResult<LocalRecord<FieldsOf<S, C>>>> {
  const live = createMemo(() => ferry.query(read(space), read(collection), read(query)));
  const [result, setResult] = createSignal(live().getSnapshot());
  createRenderEffect(() => {
    const l = live();
    setResult(() => l.getSnapshot());
    onCleanup(l.subscribe((r) => setResult(() => r)));
  });
  return result;
}

/** The sync status as a signal. */
export function createSyncStatus(ferry: Ferry<object>): Accessor<Readonly<SyncStatus>> {
  const [status, setStatus] = createSignal(ferry.statusSnapshot());
  onCleanup(ferry.onStatus(() => setStatus(() => ferry.statusSnapshot())));
  return status;
}

/** The conflict inbox (of `space`, or all of it) as a signal, read again as records change and syncs end. */
export function createConflicts(ferry: Ferry<object>, space?: string): Accessor<readonly StoredConflict[]> {
  const [conflicts, setConflicts] = createSignal<readonly StoredConflict[]>([]);
  let live = true;
  const reread = () => {
    void ferry.conflicts().then((all) => {
      if (live) setConflicts(space === undefined ? all : all.filter((c) => c.space === space));
    });
  };
  const stops = [ferry.subscribe(reread), ferry.onStatus(reread)];
  onCleanup(() => {
    live = false;
    for (const stop of stops) stop();
  });
  return conflicts;
}
