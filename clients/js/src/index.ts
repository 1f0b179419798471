// Ferry's browser client: a local-first replica in IndexedDB, synced with
// a Ferry server by exactly one tab of the app.
//
//     const ferry = await Ferry.open({ name: "todo" });
//     const space = ferry.personalSpace();          // local:anonymous until sign-in
//     await ferry.put(space, "todos", "t1", { title: "Milk", done: false });
//     const todos = await ferry.list(space, "todos", { orderBy: ["title"] });
//     ferry.subscribe((changes) => render());       // this tab, other tabs, the server
//     ferry.onStatus((s) => show(s.state, s.pending));
//
// Every tab reads and writes the shared database directly; the tab holding
// the Web Lock `{name}:leader` syncs (the outbox, pulls, the realtime
// WebSocket) and the others hear about everything over a BroadcastChannel.
// When the leader closes, the lock passes to another tab, which takes over.

import { loadCore } from "./core.js";
import { DEFAULT_FILE_CACHE_BYTES, Files } from "./files.js";
import { type LiveQuery, LiveQueries, isRead } from "./live.js";
import { Remote, type Tokens, request, withLock } from "./remote.js";
import { ANONYMOUS_SPACE, type Durability, type Session, Store } from "./store.js";
import { syncSpace } from "./sync.js";
import {
  type AnySchema,
  type Changed,
  type CollectionOf,
  type FieldsOf,
  type FileEvent,
  type FileRef,
  type FileStatus,
  FerryError,
  type HeldSchema,
  type LocalRecord,
  type Query,
  type QueryResult,
  type Rejected,
  type Resolution,
  type StoredConflict,
  type SyncReport,
  type SyncStatus,
  type User,
} from "./types.js";

export type { LiveQuery } from "./live.js";
export { ANONYMOUS_SPACE, type Durability } from "./store.js";
export * from "./types.js";

export interface FerryOptions {
  /** The Ferry server's base URL; defaults to the page's origin. */
  server?: string;
  /** The app's name: one replica (IndexedDB database) per name. */
  name?: string;
  /** Where the wasm core is, when not beside the bundle. */
  wasmUrl?: string | URL;
  /** How long after a local write to sync (writes meanwhile join). */
  debounceMs?: number;
  /** A full sync this often even without signals. */
  periodicMs?: number;
  /** Follow the server's realtime signals (a WebSocket). */
  realtime?: boolean;
  /** What a local write survives: `crash` (default) or `power-loss`. */
  durability?: Durability;
  /**
   * The most bytes of downloaded files kept on this device (default 256
   * MiB); the least recently used go first. Files attached here and not
   * yet uploaded are kept whatever their size.
   */
  maxFileCacheBytes?: number;
}

type Message =
  | { type: "changed"; changes: Changed[] }
  | { type: "status"; status: Omit<SyncStatus, "pending" | "leader"> }
  | { type: "session" }
  | { type: "file"; event: FileEvent; kick: boolean }
  | { type: "sync-request"; id: string }
  | { type: "sync-done"; id: string; error: string | null };

const MAX_BACKOFF_MS = 30_000;

function backoff(failures: number): number {
  const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(failures, 10));
  return base / 2 + Math.random() * (base / 2);
}

function randomId(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Ferry<S extends object = AnySchema> {
  private readonly channel: BroadcastChannel | null;
  private readonly remote: Remote;
  private readonly live: LiveQueries;
  private readonly lockPrefix: string;
  private readonly changeListeners = new Set<(c: Changed[]) => void>();
  private readonly statusListeners = new Set<(s: SyncStatus) => void>();
  private readonly sessionListeners = new Set<(u: User | null) => void>();
  private readonly fileListeners = new Set<(e: FileEvent) => void>();
  private readonly files: Files;
  /** Rounds in a row that ended with files missing: the next round comes sooner than the periodic one. */
  private missingRounds = 0;
  // The leader's file queue: its own loop, so that a long upload never
  // holds back records.
  private filesKick: (() => void) | null = null;
  private filesDirty = false;
  private current: SyncStatus = {
    state: "idle",
    pending: 0,
    lastSyncedAt: null,
    error: null,
    leader: false,
  };
  private session: Session | null = null;
  private closed = false;
  private release: () => void = () => undefined;
  // The leader's loop.
  private kick: (() => void) | null = null;
  private dirty = false;
  private debounce: ReturnType<typeof setTimeout> | null = null;
  private failures = 0;
  private waiting: (() => void)[] = [];
  private remoteWaiters = new Map<string, { resolve: () => void; reject: (e: Error) => void }>();
  private ws: WebSocket | null = null;
  private wsTimer: ReturnType<typeof setTimeout> | null = null;
  private wsFailures = 0;
  /** The server refused the subscription (`402`): ask again after a sync succeeds. */
  private resubscribe = false;
  private readonly onOnline = () => {
    this.failures = 0;
    this.wsFailures = 0;
    this.trigger();
    if (this.current.leader) this.connectRealtime();
  };
  private readonly onOffline = () => {
    if (this.current.leader) this.setStatus({ state: "offline", error: null });
  };

  private constructor(
    private readonly store: Store,
    private readonly options: Required<Omit<FerryOptions, "wasmUrl">>,
  ) {
    this.lockPrefix = `ferry:${options.name}`;
    this.remote = new Remote(store, this.lockPrefix);
    this.live = new LiveQueries(store);
    this.files = new Files(store, this.remote, options.maxFileCacheBytes, (e, kick) => this.fileEvent(e, kick, true));
    this.channel = typeof BroadcastChannel === "undefined" ? null : new BroadcastChannel(this.lockPrefix);
    if (this.channel) this.channel.onmessage = (e) => void this.onMessage(e.data as Message);
  }

  /** Opens the replica `name` and starts taking part in the tabs' sync. */
  static async open<S extends object = AnySchema>(options: FerryOptions = {}): Promise<Ferry<S>> {
    await loadCore(options.wasmUrl);
    const server = (options.server ?? globalThis.location?.origin ?? "").replace(/\/+$/, "");
    const resolved = {
      server,
      name: options.name ?? "ferry",
      debounceMs: options.debounceMs ?? 200,
      periodicMs: options.periodicMs ?? 60_000,
      realtime: options.realtime ?? true,
      durability: options.durability ?? "crash",
      maxFileCacheBytes: options.maxFileCacheBytes ?? DEFAULT_FILE_CACHE_BYTES,
    };
    const store = await Store.open(`ferry-${resolved.name}`, resolved.durability);
    const ferry = new Ferry<S>(store, resolved);
    ferry.session = await store.session();
    const pending = await store.pending();
    const lastSyncedAt = await store.lastSyncedAt();
    // The status may already be frozen: another tab's status can arrive while this one opens.
    ferry.current = Object.freeze({
      ...ferry.current,
      pending,
      lastSyncedAt: ferry.current.lastSyncedAt ?? lastSyncedAt,
      ...(ferry.session ? {} : { state: "signed_out" as const }),
    });
    globalThis.addEventListener?.("online", ferry.onOnline);
    globalThis.addEventListener?.("offline", ferry.onOffline);
    ferry.campaign();
    return ferry;
  }

  /** This replica's client id (one per browser profile and app). */
  get clientId(): string {
    return this.store.clientId;
  }

  /** The signed-in user, or null. */
  get user(): User | null {
    return this.session?.user ?? null;
  }

  /**
   * The app's schema this replica judges its writes by, as last fetched
   * from the server (`version` 0: none). A write it refuses throws a
   * `FerryError` with code `schema` and `details` naming the collection,
   * record, field and rule; nothing is stored or queued.
   */
  async appSchema(): Promise<HeldSchema> {
    return this.store.appSchema();
  }

  /** Whether this tab is the one that syncs. */
  get isLeader(): boolean {
    return this.current.leader;
  }

  /**
   * How many other tabs of this app have it open in this browser profile
   * (they wait for the sync lock this tab holds, or one of them holds it):
   * an app can say "this tab syncs for the others" only when there are
   * others. 0 where the browser has no Web Locks.
   */
  async otherTabs(): Promise<number> {
    if (typeof navigator === "undefined" || !navigator.locks) return 0;
    const name = `${this.lockPrefix}:leader`;
    const { held = [], pending = [] } = await navigator.locks.query();
    const tabs = [...held, ...pending].filter((l) => l.name === name).length;
    return Math.max(0, tabs - 1);
  }

  get status(): SyncStatus {
    return { ...this.current };
  }

  /**
   * The sync status as an immutable object, the same one until the status
   * changes: what `useSyncExternalStore` and stores compare.
   */
  statusSnapshot(): Readonly<SyncStatus> {
    return this.current;
  }

  /** The user's personal space, or `local:anonymous` before sign-in. */
  personalSpace(): string {
    return this.session ? `user:${this.session.user.id}` : ANONYMOUS_SPACE;
  }

  // ---- records ---------------------------------------------------------

  /** Makes a record exactly `fields` (fields it held become null). */
  put<C extends CollectionOf<S>>(space: string, collection: C, id: string, fields: FieldsOf<S, C>): Promise<void> {
    return this.write(space, collection, id, "put", fields);
  }

  /** Sets the named fields of a record, creating it. */
  patch<C extends CollectionOf<S>>(
    space: string,
    collection: C,
    id: string,
    fields: Partial<FieldsOf<S, C>>,
  ): Promise<void> {
    return this.write(space, collection, id, "patch", fields as Record<string, unknown>);
  }

  /** Deletes a record; the delete wins over every write, before or after. */
  delete(space: string, collection: CollectionOf<S>, id: string): Promise<void> {
    return this.write(space, collection, id, "delete", null);
  }

  private async write(
    space: string,
    collection: string,
    id: string,
    op: "put" | "patch" | "delete",
    fields: Record<string, unknown> | null,
  ): Promise<void> {
    this.open();
    const changed = await this.store.write(space, collection, id, op, fields);
    await this.changed([changed], true);
  }

  get<C extends CollectionOf<S>>(space: string, collection: C, id: string): Promise<LocalRecord<FieldsOf<S, C>> | null> {
    this.open();
    return this.store.get(space, collection, id) as Promise<LocalRecord<FieldsOf<S, C>> | null>;
  }

  list<C extends CollectionOf<S>>(
    space: string,
    collection: C,
    query: Query<FieldsOf<S, C>> = {},
  ): Promise<LocalRecord<FieldsOf<S, C>>[]> {
    this.open();
    return this.store.list(space, collection, query as unknown as Query) as Promise<LocalRecord<FieldsOf<S, C>>[]>;
  }

  /**
   * A live query: its result (rows, `loading`/`complete`, an error) kept
   * current as this tab, other tabs and pulls write, in work proportional
   * to each change. `subscribe` and `getSnapshot` are what React's
   * `useSyncExternalStore` takes; the bindings (`@ferry-sync/client/react`,
   * `/svelte`, `/solid`) wrap it. Watching the same query twice shares it.
   */
  query<C extends CollectionOf<S>>(
    space: string,
    collection: C,
    query: Query<FieldsOf<S, C>> = {},
  ): LiveQuery<LocalRecord<FieldsOf<S, C>>> {
    this.open();
    return this.live.query(space, collection, query as unknown as Query) as unknown as LiveQuery<
      LocalRecord<FieldsOf<S, C>>
    >;
  }

  /**
   * Calls `listener` with a query's result as soon as it is read, then with
   * each new one; returns the unsubscribe.
   */
  watch<C extends CollectionOf<S>>(
    space: string,
    collection: C,
    query: Query<FieldsOf<S, C>>,
    listener: (result: QueryResult<LocalRecord<FieldsOf<S, C>>>) => void,
  ): () => void {
    const live = this.query(space, collection, query);
    const stop = live.subscribe(listener);
    if (isRead(live)) listener(live.getSnapshot());
    return stop;
  }

  /** Follows another space (shared with the user); pulled at the next sync. */
  async track(space: string): Promise<void> {
    await this.store.track(space);
    this.broadcast({ type: "session" });
    await this.sessionChanged();
  }

  // ---- files -----------------------------------------------------------

  /**
   * Attaches a file: hashes `data`, keeps it on this device and queues its
   * upload, which the syncing tab runs after the space's records (resuming
   * what arrived of a try that broke off). Write the reference it returns
   * into a record's field; the record syncs at once, and other devices
   * show the file `missing` until the bytes arrive. `name` defaults to a
   * `File`'s name, `mediaType` to the blob's type.
   */
  attach(space: string, data: Blob | ArrayBuffer | ArrayBufferView, options: { name?: string; mediaType?: string } = {}): Promise<FileRef> {
    this.open();
    return this.files.attach(space, data, options);
  }

  /**
   * The bytes of a file a record refers to: from this device, or
   * downloaded (their hash checked) and kept in the cache. Throws a
   * `FerryError` with code `missing` while the server does not hold the
   * file yet; `onFile` then says when it arrives.
   */
  file(space: string, file: FileRef): Promise<Blob> {
    this.open();
    return this.files.file(space, file);
  }

  /** Where a file stands on this device (`local`, `uploading`, `synced`, `missing`, ...). */
  fileStatus(space: string, sha256: string): Promise<FileStatus> {
    this.open();
    return this.files.status(space, sha256);
  }

  /** Hears each change of a file's status (with upload progress), in this tab or another. */
  onFile(listener: (event: FileEvent) => void): () => void {
    this.fileListeners.add(listener);
    return () => this.fileListeners.delete(listener);
  }

  private fileEvent(e: FileEvent, kick: boolean, share: boolean): void {
    this.files.heard(e);
    if (share) this.broadcast({ type: "file", event: e, kick });
    for (const l of this.fileListeners) l(e);
    // A file attached uploads after the next round of records; a missing
    // one is asked for again soon.
    if (kick) this.trigger(this.options.debounceMs);
    if (e.state === "missing") {
      this.missingRounds = 0;
      this.trigger(2000);
    }
  }

  /** Hears every record that changes: this tab's, other tabs', pulled. */
  subscribe(listener: (changes: Changed[]) => void): () => void {
    this.changeListeners.add(listener);
    return () => this.changeListeners.delete(listener);
  }

  /** Hears the sync status (also called at once with the current one). */
  onStatus(listener: (status: SyncStatus) => void): () => void {
    this.statusListeners.add(listener);
    listener(this.status);
    return () => this.statusListeners.delete(listener);
  }

  /** Hears sign-in and sign-out, in this tab or another. */
  onSession(listener: (user: User | null) => void): () => void {
    this.sessionListeners.add(listener);
    return () => this.sessionListeners.delete(listener);
  }

  // ---- conflicts -------------------------------------------------------

  conflicts(): Promise<StoredConflict[]> {
    return this.store.conflicts();
  }

  /**
   * Settles conflict `n`: keep this replica's value (written again now, so
   * it wins), take the other, or write another value. A `record_deleted`
   * conflict is settled by taking the delete or with `restore`.
   */
  async resolve(n: number, resolution: Resolution): Promise<void> {
    const changed = await this.store.resolve(n, resolution);
    await this.changed(changed ? [changed] : [], true);
  }

  /**
   * Settles `record_deleted` conflict `n` by writing what this replica lost
   * to the delete as a new record of the same collection (`id`, or one made
   * from the deleted id); returns the new id. A delete is final: the
   * deleted id stays deleted.
   */
  async restore(n: number, id?: string): Promise<string> {
    const changed = await this.store.restore(n, id);
    await this.changed([changed], true);
    return changed.id;
  }

  rejected(): Promise<Rejected[]> {
    return this.store.rejected();
  }

  dismissRejected(n: number): Promise<void> {
    return this.store.dismissRejected(n);
  }

  // ---- sync ------------------------------------------------------------

  /**
   * Syncs now and resolves when a sync that started after this call has
   * finished (rejecting with its error). In a tab that is not the leader,
   * the leader does it.
   */
  sync(): Promise<void> {
    this.open();
    if (this.current.leader) {
      return new Promise((resolve, reject) => {
        this.afterRound(resolve, reject);
        this.trigger();
      });
    }
    const id = randomId();
    return new Promise((resolve, reject) => {
      this.remoteWaiters.set(id, { resolve, reject });
      this.broadcast({ type: "sync-request", id });
    });
  }

  // ---- sessions --------------------------------------------------------

  /** Asks the server to mail a sign-in link to `email`. */
  async requestMagicLink(email: string): Promise<void> {
    await request(`${this.options.server}/v1/auth/magic-link`, {
      method: "POST",
      body: JSON.stringify({ email }),
    });
  }

  /** Signs in with the token of a magic link (the `#token=` of its URL). */
  async signInWithLink(token: string): Promise<User> {
    const tokens = await request<Tokens>(`${this.options.server}/v1/auth/verify`, {
      method: "POST",
      body: JSON.stringify({ token }),
    });
    return this.startSession({
      user: tokens.user,
      server: this.options.server,
      accessToken: tokens.access_token,
      refreshToken: tokens.refresh_token,
      expiresAt: Date.now() + tokens.expires_in * 1000,
    });
  }

  /**
   * Signs in with an access token Ferry accepts (an external identity
   * provider's). Such a session cannot refresh: call this again with a
   * fresh token before it expires.
   */
  async signInWithToken(accessToken: string): Promise<User> {
    const me = await request<{ user: User }>(`${this.options.server}/v1/me`, {
      headers: { Authorization: `Bearer ${accessToken}` },
    });
    return this.startSession({
      user: me.user,
      server: this.options.server,
      accessToken,
      refreshToken: null,
      expiresAt: null,
    });
  }

  private async startSession(session: Session): Promise<User> {
    const claimed = await this.store.startSession(session);
    await this.changed(claimed, true);
    this.broadcast({ type: "session" });
    await this.sessionChanged();
    return session.user;
  }

  /**
   * Signs out. Pending changes are synced first when the server can be
   * reached (for at most `timeoutMs`), the session ends on the server, and
   * unless `keep` is set every record, pending change and conflict is
   * deleted from this browser, so the next person finds nothing. Returns
   * how many pending changes were discarded.
   */
  async signOut(options: { keep?: boolean; timeoutMs?: number } = {}): Promise<number> {
    const session = await this.store.session();
    if (session && (await this.store.pending()) > 0) {
      const timeout = new Promise<void>((r) => setTimeout(r, options.timeoutMs ?? 5000));
      await Promise.race([this.sync().catch(() => undefined), timeout]);
    }
    if (session?.refreshToken) {
      await request(`${session.server}/v1/auth/logout`, {
        method: "POST",
        body: JSON.stringify({ refresh_token: session.refreshToken }),
      }).catch(() => undefined);
    }
    const discarded = await withLock(`${this.lockPrefix}:refresh`, () => this.store.endSession(!options.keep));
    this.broadcast({ type: "session" });
    await this.sessionChanged();
    return discarded;
  }

  /** Leaves the tabs' sync (another tab takes over) and closes the replica. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    globalThis.removeEventListener?.("online", this.onOnline);
    globalThis.removeEventListener?.("offline", this.onOffline);
    this.stopRealtime();
    this.kick?.();
    this.filesKick?.();
    this.files.abortAll();
    this.release();
    this.channel?.close();
    this.live.close();
    this.store.close();
  }

  // ---- inside ----------------------------------------------------------

  private open(): void {
    if (this.closed) throw new FerryError("this Ferry replica is closed", "closed");
  }

  private broadcast(m: Message): void {
    this.channel?.postMessage(m);
  }

  /** Tells this tab's listeners, and other tabs when `share`. */
  private async changed(changes: Changed[], share: boolean): Promise<void> {
    if (changes.length === 0) return;
    // Other tabs read the records themselves: a message may arrive after
    // their own later write to the same record.
    if (share) this.broadcast({ type: "changed", changes: changes.map(({ fields: _, ...c }) => c) });
    this.live.changed(changes);
    for (const l of this.changeListeners) l(changes);
    const pending = await this.store.pending();
    if (pending !== this.current.pending) this.setStatus({ pending });
    // Local writes sync soon, unless sync is waiting out a failure (its
    // backoff, the network, a 402): then the write waits with the rest.
    const waiting = ["offline", "error", "paused"].includes(this.current.state);
    if (!waiting && changes.some((c) => c.source === "local")) this.trigger(this.options.debounceMs);
  }

  private async sessionChanged(): Promise<void> {
    // Transfers of the session that ended stop; nothing of them is kept.
    if (this.session?.user.id !== (await this.store.session())?.user.id) this.files.abortAll();
    this.session = await this.store.session();
    this.live.reloadAll();
    for (const l of this.sessionListeners) l(this.user);
    this.setStatus({ pending: await this.store.pending() });
    if (this.current.leader) {
      this.stopRealtime();
      if (this.session) {
        this.failures = 0;
        this.connectRealtime();
        this.trigger();
      } else {
        this.setStatus({ state: "signed_out", error: null });
      }
    }
  }

  private async onMessage(m: Message): Promise<void> {
    if (this.closed) return;
    switch (m.type) {
      case "changed":
        await this.changed(m.changes, false);
        break;
      case "status":
        if (!this.current.leader) this.setStatus(m.status);
        break;
      case "session":
        await this.sessionChanged();
        break;
      case "file":
        this.fileEvent(m.event, m.kick, false);
        break;
      case "sync-request":
        if (this.current.leader) {
          this.waiting.push(() => this.broadcast({ type: "sync-done", id: m.id, error: this.current.error }));
          this.trigger();
        }
        break;
      case "sync-done": {
        const waiter = this.remoteWaiters.get(m.id);
        this.remoteWaiters.delete(m.id);
        if (waiter && m.error) waiter.reject(new FerryError(m.error, "sync_failed"));
        else waiter?.resolve();
        break;
      }
    }
  }

  private setStatus(change: Partial<SyncStatus>): void {
    const next = Object.freeze({ ...this.current, ...change });
    const same = (Object.keys(next) as (keyof SyncStatus)[]).every((k) => next[k] === this.current[k]);
    if (same) return;
    this.current = next;
    if ("lastSyncedAt" in change) this.live.synced();
    if (this.current.leader && ("state" in change || "error" in change || "lastSyncedAt" in change)) {
      const { state, lastSyncedAt, error } = this.current;
      this.broadcast({ type: "status", status: { state, lastSyncedAt, error } });
    }
    for (const l of this.statusListeners) l(this.status);
  }

  /**
   * Settles a `sync()` when the next round ends, by how it ended; a failure
   * carries `code`, or the state the round left.
   */
  private afterRound(resolve: () => void, reject: (e: Error) => void, code?: string): void {
    this.waiting.push(() =>
      this.current.error ? reject(new FerryError(this.current.error, code ?? this.current.state)) : resolve(),
    );
  }

  /** The spaces this replica syncs: every one it holds, and the user's own. */
  private async syncedSpaces(): Promise<string[]> {
    const all = new Set([...(await this.store.spaces()), this.personalSpace()]);
    return [...all].filter((s) => !s.startsWith("local:"));
  }

  /** Waits for the leader lock; holds it until `close`. */
  private campaign(): void {
    const held = new Promise<void>((resolve) => {
      this.release = resolve;
    });
    const lead = async () => {
      if (this.closed) return;
      this.setStatus({ leader: true });
      // Requests other tabs sent to the previous leader are now ours.
      for (const [id, w] of this.remoteWaiters) {
        this.remoteWaiters.delete(id);
        this.afterRound(w.resolve, w.reject, "sync_failed");
      }
      if (this.session) this.connectRealtime();
      void this.loop();
      void this.filesLoop();
      await held;
    };
    if (typeof navigator !== "undefined" && navigator.locks) {
      void navigator.locks.request(`${this.lockPrefix}:leader`, lead);
    } else {
      void lead();
    }
  }

  /** Asks the leader's loop to sync, now or after `delayMs` (debounced). */
  private trigger(delayMs = 0): void {
    if (!this.current.leader) return;
    if (delayMs > 0) {
      if (this.debounce === null) {
        this.debounce = setTimeout(() => {
          this.debounce = null;
          this.trigger();
        }, delayMs);
      }
      return;
    }
    this.dirty = true;
    this.kick?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.kick = done;
    });
  }

  /** The leader's sync loop: runs until the tab closes. */
  private async loop(): Promise<void> {
    let delay = 0;
    this.dirty = true;
    while (!this.closed) {
      if (!this.dirty) await this.sleep(delay);
      this.kick = null;
      if (this.closed) break;
      this.dirty = false;
      const waiters = this.waiting.splice(0);
      delay = await this.syncRound();
      for (const w of waiters) w();
    }
  }

  private kickFiles(): void {
    this.filesDirty = true;
    this.filesKick?.();
  }

  /** The leader's file queue: after each round of records, every space's uploads and missing files. */
  private async filesLoop(): Promise<void> {
    while (!this.closed) {
      if (!this.filesDirty) await new Promise<void>((r) => (this.filesKick = r));
      this.filesKick = null;
      this.filesDirty = false;
      const user = this.session?.user.id;
      if (this.closed || !user) continue;
      try {
        for (const space of await this.syncedSpaces()) await this.files.run(space, user);
      } catch (e) {
        console.error("ferry: the file queue failed", e);
      }
    }
  }

  /** Syncs every space once; returns how long to wait before the next. */
  private async syncRound(): Promise<number> {
    const periodic = this.options.periodicMs;
    if (!this.session) {
      this.setStatus({ state: "signed_out", error: null });
      return periodic;
    }
    if (globalThis.navigator?.onLine === false) {
      this.setStatus({ state: "offline", error: null });
      return periodic;
    }
    this.setStatus({ state: "syncing" });
    const report: SyncReport = { pushed: 0, pulled: 0, conflicts: 0, rejected: 0, resynced: false, expired: false };
    try {
      for (const space of await this.syncedSpaces()) {
        const r = await syncSpace(this.store, this.remote, space, (c) => void this.changed(c, true));
        report.pushed += r.pushed;
        report.pulled += r.pulled;
      }
      // The records went first: the files they refer to follow, in a loop
      // of their own.
      this.kickFiles();
      this.failures = 0;
      // A subscription the billing gate refused goes through now.
      if (this.resubscribe && this.ws?.readyState === WebSocket.OPEN) void this.follow(this.ws);
      this.setStatus({
        state: "idle",
        error: null,
        lastSyncedAt: Date.now(),
        pending: await this.store.pending(),
      });
      // Files asked for and not yet uploaded by their authors: asked for
      // again after 2, 4, 8 ... seconds, up to the periodic sync.
      if ((await this.files.missing()) === 0) {
        this.missingRounds = 0;
        return periodic;
      }
      this.missingRounds += 1;
      return Math.min(periodic, 1000 * 2 ** Math.min(this.missingRounds, 10));
    } catch (e) {
      const err = e instanceof FerryError ? e : new FerryError(String(e), "error");
      this.setStatus({ pending: await this.store.pending() });
      if (err.code === "payment_required") {
        // The server's own words: they name the plan sync needs.
        this.setStatus({ state: "paused", error: err.message });
        return periodic;
      }
      if (err.code === "signed_out") {
        this.setStatus({ state: "signed_out", error: null });
        return periodic;
      }
      if (err.code === "invalid_token" || err.status === 401) {
        this.setStatus({ state: "signed_out", error: "The session expired; sign in again." });
        return periodic;
      }
      this.failures += 1;
      const wait = err.retryAfter !== null ? err.retryAfter * 1000 : backoff(this.failures);
      this.setStatus({ state: err.code === "offline" ? "offline" : "error", error: err.message });
      return wait;
    }
  }

  // ---- realtime --------------------------------------------------------

  private stopRealtime(): void {
    if (this.wsTimer !== null) clearTimeout(this.wsTimer);
    this.wsTimer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      ws.close(1000);
    }
  }

  /** Opens the realtime WebSocket (leader, signed in); reconnects itself. */
  private connectRealtime(): void {
    if (!this.options.realtime || this.closed || !this.current.leader || this.ws || typeof WebSocket === "undefined") return;
    if (this.wsTimer !== null) clearTimeout(this.wsTimer);
    this.wsTimer = null;
    const url = `${this.options.server.replace(/^http/, "ws")}/v1/ws`;
    let ws: WebSocket;
    try {
      ws = new WebSocket(url);
    } catch {
      this.retryRealtime();
      return;
    }
    this.ws = ws;
    ws.onopen = async () => {
      try {
        const session = await this.remote.freshToken();
        ws.send(JSON.stringify({ type: "auth", token: session.accessToken }));
      } catch {
        ws.close();
      }
    };
    ws.onmessage = async (e) => {
      let m: { type?: string; space?: string; cursor?: number; version?: number; error?: { code?: string } };
      try {
        m = JSON.parse(String(e.data));
      } catch {
        return;
      }
      if (m.type === "auth-ok") {
        this.wsFailures = 0;
        await this.follow(ws);
        this.scheduleReauth(ws);
      } else if (m.type === "error") {
        this.resubscribe = true;
      } else if (m.type === "sync-available" && typeof m.space === "string" && typeof m.cursor === "number") {
        if (m.cursor > (await this.store.cursor(m.space))) this.trigger();
      } else if (m.type === "schema" && typeof m.version === "number") {
        // A new app schema: the sync's answer names it, and the sync
        // fetches it before more writes are judged.
        if (m.version !== (await this.store.appSchema()).version) this.trigger();
      }
    };
    ws.onclose = async (e) => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (e.code === 4401 && this.session) {
        // The token expired or was refused: a fresh one for the next try.
        await this.remote.refresh(this.session.accessToken).catch(() => undefined);
      }
      this.retryRealtime();
    };
  }

  /** Follows the replica's spaces on `ws`. */
  private async follow(ws: WebSocket): Promise<void> {
    this.resubscribe = false;
    const spaces = await this.syncedSpaces();
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "subscribe", spaces }));
  }

  private retryRealtime(): void {
    if (this.closed || !this.current.leader || !this.session) return;
    this.wsFailures += 1;
    this.wsTimer = setTimeout(() => this.connectRealtime(), backoff(this.wsFailures));
  }

  /** Sends a fresh token before the connection's token expires. */
  private scheduleReauth(ws: WebSocket): void {
    const expiresAt = this.session?.expiresAt;
    if (!expiresAt) return;
    const wait = Math.max(5_000, expiresAt - Date.now() - 60_000);
    setTimeout(async () => {
      if (this.ws !== ws || ws.readyState !== WebSocket.OPEN) return;
      try {
        const session = await this.remote.freshToken(90_000);
        this.session = session;
        ws.send(JSON.stringify({ type: "auth", token: session.accessToken }));
        this.scheduleReauth(ws);
      } catch {
        ws.close();
      }
    }, wait);
  }
}
