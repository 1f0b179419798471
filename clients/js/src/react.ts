// Ferry for React (`@ferry-sync/client/react`): a provider for the app's
// `Ferry`, and hooks over live queries, the sync status and the conflict
// inbox. Each hook is a thin adapter: the result is the live query's own
// immutable snapshot, read with `useSyncExternalStore`, so it is safe
// under StrictMode and concurrent rendering, and a row that did not change
// is the same object in the next result (`memo` skips it).
//
//     <FerryProvider ferry={ferry}><Todos /></FerryProvider>
//
//     function Todos() {
//       const { rows, status } = useQuery(space, "todos", { where: [["done", "=", false]], orderBy: ["title"] });
//       return status === "loading" && rows.length === 0 ? <Spinner /> : rows.map((r) => <Todo key={r.id} todo={r} />);
//     }
//
// Typed by the app's schema: `const { useQuery } = ferryHooks<Schema>();`.

import {
  type ReactNode,
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useState,
  useSyncExternalStore,
} from "react";

import type {
  AnySchema,
  CollectionOf,
  Ferry,
  FieldsOf,
  LocalRecord,
  Query,
  QueryResult,
  StoredConflict,
  SyncStatus,
} from "./index.js";

const FerryContext = createContext<Ferry<object> | null>(null);

/** Makes `ferry` the replica the hooks below it use. */
export function FerryProvider(props: { ferry: Ferry<object>; children?: ReactNode }): ReactNode {
  return createElement(FerryContext.Provider, { value: props.ferry }, props.children);
}

/** The `Ferry` of the nearest `FerryProvider`. */
export function useFerry<S extends object = AnySchema>(): Ferry<S> {
  const ferry = useContext(FerryContext);
  if (!ferry) throw new Error("Ferry's hooks need a <FerryProvider ferry={...}> above them");
  return ferry as unknown as Ferry<S>;
}

/**
 * A live query's current result (`rows`, `status`, `error`), re-rendering
 * the component when it changes. The query may be a new object on each
 * render: queries that are the same JSON share one live query.
 */
export function useQuery<S extends object = AnySchema, C extends CollectionOf<S> = CollectionOf<S>>(
  space: string,
  collection: C,
  query: Query<FieldsOf<S, C>> = {},
): QueryResult<LocalRecord<FieldsOf<S, C>>> {
  const ferry = useFerry<S>();
  const key = JSON.stringify(query);
  const live = useMemo(() => ferry.query(space, collection, query), [ferry, space, collection, key]);
  const subscribe = useCallback((changed: () => void) => live.subscribe(changed), [live]);
  const snapshot = useCallback(() => live.getSnapshot(), [live]);
  return useSyncExternalStore(subscribe, snapshot, snapshot);
}

/** The sync status (`state`, `pending`, `lastSyncedAt`, `error`, `leader`). */
export function useSyncStatus(): Readonly<SyncStatus> {
  const ferry = useFerry();
  const subscribe = useCallback((changed: () => void) => ferry.onStatus(() => changed()), [ferry]);
  const snapshot = useCallback(() => ferry.statusSnapshot(), [ferry]);
  return useSyncExternalStore(subscribe, snapshot, snapshot);
}

/**
 * The conflict inbox (of `space`, or all of it), read again whenever
 * records change or a sync ends; `[]` until first read.
 */
export function useConflicts(space?: string): readonly StoredConflict[] {
  const ferry = useFerry();
  const [conflicts, setConflicts] = useState<readonly StoredConflict[]>([]);
  useEffect(() => {
    let live = true;
    const read = () => {
      void ferry.conflicts().then((all) => {
        if (live) setConflicts(space === undefined ? all : all.filter((c) => c.space === space));
      });
    };
    const stops = [ferry.subscribe(read), ferry.onStatus(read)];
    return () => {
      live = false;
      for (const stop of stops) stop();
    };
  }, [ferry, space]);
  return conflicts;
}

/** The hooks typed by an app's schema (`ferry schema typescript`). */
export function ferryHooks<S extends object>(): {
  useFerry: () => Ferry<S>;
  useQuery: <C extends CollectionOf<S>>(
    space: string,
    collection: C,
    query?: Query<FieldsOf<S, C>>,
  ) => QueryResult<LocalRecord<FieldsOf<S, C>>>;
  useSyncStatus: typeof useSyncStatus;
  useConflicts: typeof useConflicts;
} {
  return {
    useFerry: () => useFerry<S>(),
    useQuery: (space, collection, query) => useQuery<S, typeof collection>(space, collection, query),
    useSyncStatus,
    useConflicts,
  };
}
