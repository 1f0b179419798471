// Files in the browser (docs/files.md §6): attachments kept in the
// replica's IndexedDB beside the records, an upload queue the syncing tab
// runs after each round of records, downloads checked against their hash
// into a cache of bounded size, and a status per file.
//
// Two stores, both keyed by (space, sha256): `files` holds what this
// device knows of each file (its reference and where it stands) and
// `fileBlobs` its bytes, when here, as a Blob (which IndexedDB keeps on
// disk apart), so that a status change never rewrites the bytes. An entry
// with `upload` set is pinned: its bytes are the only copy until the
// server holds them, so eviction never takes them.
//
// Everything written after a transfer is written only while the user who
// started it is still signed in (checked in the writing transaction), and
// a sign-out aborts transfers in flight: a wipe leaves nothing behind.

import * as core from "./core.js";
import type { Remote } from "./remote.js";
import type { Session, Store } from "./store.js";
import { type FileEvent, type FileRef, FerryError, type FileStatus } from "./types.js";

/** What the `files` store holds per (space, sha256). */
export interface FileEntry extends FileRef {
  space: string;
  /** 1: its bytes are in `fileBlobs`. */
  held?: 1;
  /** `queued`: attached here, not yet on the server; `failed`: refused for good. */
  upload?: "queued" | "failed";
  error?: { code: string; message: string };
  /** 1: the server did not hold it when last asked. */
  missing?: 1;
  /** When it was last attached or read (ms), for least recently used first out. */
  usedAt: number;
}

/** The default bound of downloaded bytes kept: 256 MiB. */
export const DEFAULT_FILE_CACHE_BYTES = 256 * 1024 * 1024;

/** Refusals that trying again will not change: the upload fails, with the server's reason. */
function refusedForGood(e: FerryError): boolean {
  return [403, 404, 411, 413, 422].includes(e.status ?? 0) || e.code === "quota_exceeded";
}

/** How long a transfer of `size` bytes may take: 30 s and a second per 64 KiB, as the server allows. */
export function transferMs(size: number): number {
  return 30_000 + Math.ceil(size / 65_536) * 1000;
}

function filePath(space: string, sha256: string): string {
  return `/v1/spaces/${encodeURIComponent(space)}/files/${sha256}`;
}

function checkSpace(space: string): void {
  try {
    core.checkName("space", space);
  } catch (e) {
    throw new FerryError(e instanceof Error ? e.message : String(e), "invalid");
  }
}

function mismatch(ref: FileRef): FerryError {
  return new FerryError(`the server's bytes for ${ref.sha256} are not the file named`, "hash_mismatch");
}

/** Whether `space` may be written for `user` now: a space of this device always, any other while `user` is signed in. */
function stillFor(session: Session | undefined, space: string, user: string | null): boolean {
  return space.startsWith("local:") || (session !== undefined && session.user.id === user);
}

const gone = () => new FerryError("signed out while the file was on its way", "signed_out");

export class Files {
  /** Uploads in flight in this tab or (as heard) another: (space, sha256) → [sent, total]. */
  private readonly progress = new Map<string, [number, number]>();
  /** Transfers in flight, aborted at a sign-out. */
  private readonly inflight = new Set<AbortController>();

  constructor(
    private readonly store: Store,
    private readonly remote: Remote,
    private readonly maxCacheBytes: number,
    /** Tells this tab's listeners and the other tabs; `kick`: the upload queue has work. */
    private readonly emit: (e: FileEvent, kick: boolean) => void,
  ) {}

  private async user(): Promise<string | null> {
    return (await this.store.session())?.user.id ?? null;
  }

  /** Hashes `data`, keeps it (pinned) and queues its upload; its reference. */
  async attach(
    space: string,
    data: Blob | ArrayBuffer | ArrayBufferView,
    options: { name?: string; mediaType?: string } = {},
  ): Promise<FileRef> {
    checkSpace(space);
    const user = await this.user();
    if (!space.startsWith("local:") && user === null) {
      throw new FerryError(`sign in to attach files to ${space}`, "signed_out");
    }
    const blob = data instanceof Blob ? data : new Blob([data as BlobPart]);
    const name = options.name ?? (typeof File !== "undefined" && data instanceof File ? data.name : undefined);
    const ref = core.fileRef({
      sha256: await core.hashBlob(blob),
      size: blob.size,
      media_type: options.mediaType ?? (blob.type || "application/octet-stream"),
      ...(name ? { name } : {}),
    });
    const tx = this.store.db.transaction(["files", "fileBlobs", "meta"], "readwrite");
    if (!stillFor((await tx.objectStore("meta").get("session")) as Session | undefined, space, user)) {
      tx.abort();
      await tx.done.catch(() => undefined);
      throw gone();
    }
    // Queued even when the bytes are here: the server may have collected
    // or forgotten them since; asking by hash first makes it cheap.
    await tx.objectStore("fileBlobs").put(blob, [space, ref.sha256]);
    await tx.objectStore("files").put({ ...ref, space, held: 1, upload: "queued", usedAt: Date.now() });
    await tx.done;
    this.emit({ space, sha256: ref.sha256, state: "local" }, true);
    return ref;
  }

  async status(space: string, sha256: string): Promise<FileStatus> {
    const e = await this.store.db.get("files", [space, sha256]);
    if (!e) return { state: "remote" };
    if (e.upload === "failed") {
      return { state: "failed", code: e.error?.code ?? "refused", message: e.error?.message ?? "" };
    }
    if (e.upload === "queued") {
      const p = this.progress.get(JSON.stringify([space, sha256]));
      return p ? { state: "uploading", sent: p[0], total: p[1] } : { state: "local" };
    }
    if (e.missing) return { state: "missing" };
    return { state: e.held ? "synced" : "remote" };
  }

  /** What another tab (or this one) said of a file's upload. */
  heard(e: FileEvent): void {
    const key = JSON.stringify([e.space, e.sha256]);
    if (e.state === "uploading") this.progress.set(key, [e.sent, e.total]);
    else this.progress.delete(key);
  }

  /** Aborts every transfer in flight (a sign-out). */
  abortAll(): void {
    for (const c of this.inflight) c.abort();
    this.inflight.clear();
  }

  /**
   * The bytes of `file` in `space`: from this device, or downloaded (hash
   * and size checked) and kept. A file the server does not hold yet
   * throws `missing` and is asked for again at each sync of the space.
   */
  async file(space: string, file: FileRef): Promise<Blob> {
    checkSpace(space);
    const ref = core.fileRef(file);
    const tx = this.store.db.transaction(["files", "fileBlobs"], "readwrite");
    const [held, blob] = await Promise.all([
      tx.objectStore("files").get([space, ref.sha256]),
      tx.objectStore("fileBlobs").get([space, ref.sha256]),
    ]);
    if (held && blob) {
      await tx.objectStore("files").put({ ...held, usedAt: Date.now() });
      await tx.done;
      return blob;
    }
    await tx.done;
    if (space.startsWith("local:")) {
      throw new FerryError(`${ref.sha256} was not attached on this device`, "missing", 404);
    }
    return this.download(space, ref, await this.user(), false);
  }

  /** Runs `f` with an abort signal that a sign-out or the transfer's deadline fires. */
  private async transfer<T>(size: number, f: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const ctl = new AbortController();
    this.inflight.add(ctl);
    try {
      return await f(AbortSignal.any([ctl.signal, AbortSignal.timeout(transferMs(size))]));
    } finally {
      this.inflight.delete(ctl);
    }
  }

  private async download(space: string, ref: FileRef, user: string | null, announce: boolean): Promise<Blob> {
    const blob = await this.transfer(ref.size, async (signal) => {
      let res: Response;
      try {
        res = await this.remote.raw(filePath(space, ref.sha256), { signal });
      } catch (e) {
        if (!(e instanceof FerryError && e.status === 404)) throw e;
        await this.markMissing(space, ref, user);
        // The same answer whether its author has not uploaded it yet or the
        // space is not the caller's: the server says no more.
        throw new FerryError(`the server does not hold ${ref.sha256} (yet)`, "missing", 404);
      }
      const declared = res.headers.get("Content-Length");
      if (declared !== null && Number(declared) !== ref.size) throw mismatch(ref);
      return readChecked(res, ref);
    });
    await this.keep(space, ref, blob, user, announce);
    return blob;
  }

  private async markMissing(space: string, ref: FileRef, user: string | null): Promise<void> {
    const tx = this.store.db.transaction(["files", "meta"], "readwrite");
    if (!stillFor((await tx.objectStore("meta").get("session")) as Session | undefined, space, user)) {
      await tx.done;
      return;
    }
    const files = tx.objectStore("files");
    const held = await files.get([space, ref.sha256]);
    const news = !held || (!held.held && !held.missing);
    if (!held) await files.put({ ...ref, space, missing: 1, usedAt: Date.now() });
    else if (news) await files.put({ ...held, missing: 1 });
    await tx.done;
    // Said once: a view that asks again on each event must not loop.
    if (news) this.emit({ space, sha256: ref.sha256, state: "missing" }, false);
  }

  /**
   * Keeps downloaded bytes, unless their user signed out meanwhile (a wipe
   * must leave nothing). Says so when the file was missing or `announce`.
   */
  private async keep(space: string, ref: FileRef, blob: Blob, user: string | null, announce: boolean): Promise<void> {
    const tx = this.store.db.transaction(["files", "fileBlobs", "meta"], "readwrite");
    if (!stillFor((await tx.objectStore("meta").get("session")) as Session | undefined, space, user)) {
      tx.abort();
      await tx.done.catch(() => undefined);
      throw gone();
    }
    const files = tx.objectStore("files");
    const held = await files.get([space, ref.sha256]);
    const { missing, ...rest } = held ?? { ...ref, space, usedAt: 0 };
    await tx.objectStore("fileBlobs").put(blob, [space, ref.sha256]);
    await files.put({ ...rest, held: 1, usedAt: Date.now() });
    await tx.done;
    if (missing || announce) this.emit({ space, sha256: ref.sha256, state: "synced" }, false);
    await this.evict([space, ref.sha256]);
  }

  /**
   * Drops the least recently used unpinned bytes while they pass the
   * bound, never those of `kept` (just kept: an app reading again what an
   * event announced must not make two files evict each other forever).
   */
  private async evict(kept: [string, string]): Promise<void> {
    const tx = this.store.db.transaction(["files", "fileBlobs"], "readwrite");
    const files = tx.objectStore("files");
    const cached = (await files.getAll()).filter((e) => e.held && e.upload === undefined);
    let total = cached.reduce((n, e) => n + e.size, 0);
    cached.sort((a, b) => a.usedAt - b.usedAt);
    for (const e of cached) {
      if (total <= this.maxCacheBytes) break;
      if (e.space === kept[0] && e.sha256 === kept[1]) continue;
      await files.delete([e.space, e.sha256]);
      await tx.objectStore("fileBlobs").delete([e.space, e.sha256]);
      total -= e.size;
    }
    await tx.done;
  }

  /** How many files wait on the server (missing). */
  async missing(): Promise<number> {
    return (await this.store.db.getAll("files")).filter((e) => e.missing).length;
  }

  /**
   * Uploads the queued files of `space` for `user` (resuming what the
   * server holds of each), then asks again for its missing ones. Stops
   * when `user` signs out. Never throws: a file's failure waits for a
   * later run, or, refused for good, marks the file failed.
   */
  async run(space: string, user: string): Promise<void> {
    const entries = await this.store.db.getAll("files", IDBKeyRange.bound([space], [space, []]));
    for (const e of entries) {
      if ((await this.user()) !== user) return;
      // Read again: another tab may have uploaded or forgotten it meanwhile.
      const now = await this.store.db.get("files", [e.space, e.sha256]);
      if (!now) continue;
      try {
        if (now.upload === "queued") await this.upload(now, user);
        else if (now.missing) await this.download(space, now, user, true);
      } catch (err) {
        const f = err instanceof FerryError ? err : new FerryError(String(err), "error");
        if (now.upload === "queued") {
          this.progress.delete(JSON.stringify([now.space, now.sha256]));
          if (refusedForGood(f)) await this.fail(now, f, user);
          // Other tabs stop showing its progress; no new run is asked for.
          else this.emit({ space: now.space, sha256: now.sha256, state: "local" }, false);
        }
        if (f.code === "offline" || f.code === "signed_out") return;
      }
    }
  }

  /** Writes `f` to the entry of `e` if it is still `user`'s; whether it did. */
  private async update(e: FileEntry, user: string, f: (held: FileEntry) => FileEntry | null): Promise<boolean> {
    const tx = this.store.db.transaction(["files", "meta"], "readwrite");
    const session = (await tx.objectStore("meta").get("session")) as Session | undefined;
    const held = await tx.objectStore("files").get([e.space, e.sha256]);
    const next = held && stillFor(session, e.space, user) ? f(held) : null;
    if (next) await tx.objectStore("files").put(next);
    await tx.done;
    return next !== null;
  }

  private async fail(e: FileEntry, err: FerryError, user: string): Promise<void> {
    const done = await this.update(e, user, (held) =>
      held.upload === "queued" ? { ...held, upload: "failed", error: { code: err.code, message: err.message } } : null,
    );
    if (done) this.emit({ space: e.space, sha256: e.sha256, state: "failed", code: err.code, message: err.message }, false);
  }

  private async uploaded(e: FileEntry, user: string): Promise<void> {
    this.progress.delete(JSON.stringify([e.space, e.sha256]));
    const done = await this.update(e, user, (held) => {
      if (held.upload !== "queued") return null;
      const { upload: _, error: __, missing: ___, ...rest } = held;
      return { ...rest, usedAt: Date.now() };
    });
    if (done) this.emit({ space: e.space, sha256: e.sha256, state: "synced" }, false);
    await this.evict([e.space, e.sha256]);
  }

  /** Asks by hash, then sends what the server does not hold. */
  private async upload(e: FileEntry, user: string): Promise<void> {
    const path = filePath(e.space, e.sha256);
    const blob = await this.store.db.get("fileBlobs", [e.space, e.sha256]);
    if (!blob || blob.size !== e.size) {
      throw new FerryError("the attached bytes are gone from this device", "file_lost", 422);
    }
    let offset = 0;
    try {
      await this.transfer(0, (signal) => this.remote.raw(path, { method: "HEAD", signal }));
      return this.uploaded(e, user);
    } catch (err) {
      if (!(err instanceof FerryError) || err.status !== 404) throw err;
      const held = Number(err.details?.offset ?? NaN);
      if (Number.isSafeInteger(held) && held > 0 && held < e.size) offset = held;
    }
    for (let tries = 0; ; tries++) {
      try {
        await this.put(e, path, blob, offset);
        return this.uploaded(e, user);
      } catch (err) {
        if (!(err instanceof FerryError) || tries > 0) throw err;
        if (err.code === "conflict" && err.details?.offset !== undefined) {
          // The server holds another offset (a try it received after ours
          // broke off): send from there, once; at the size, all of it.
          const at = Number(err.details.offset);
          if (!Number.isSafeInteger(at) || at < 0 || at > e.size) throw err;
          offset = at === e.size ? 0 : at;
        } else if (err.code === "hash_mismatch" && offset > 0) {
          // What the server held was not these bytes, and it dropped it:
          // the whole file, once.
          offset = 0;
        } else {
          throw err;
        }
      }
    }
  }

  private put(e: FileEntry, path: string, blob: Blob, offset: number): Promise<void> {
    const headers: Record<string, string> = { "Content-Type": e.media_type };
    if (e.name) headers["Ferry-File-Name"] = encodeURIComponent(e.name);
    if (offset > 0) headers["Content-Range"] = `bytes ${offset}-${e.size - 1}/${e.size}`;
    let last = 0;
    return this.transfer(e.size - offset, (signal) =>
      this.remote.send(path, "PUT", headers, blob.slice(offset), signal, (sent) => {
        const now = Date.now();
        if (now - last < 100 && sent < blob.size - offset) return;
        last = now;
        this.progress.set(JSON.stringify([e.space, e.sha256]), [offset + sent, e.size]);
        this.emit({ space: e.space, sha256: e.sha256, state: "uploading", sent: offset + sent, total: e.size }, false);
      }),
    );
  }
}

/** A download's body, hashed as it arrives and refused past the file's size or when it is not the file. */
async function readChecked(res: Response, ref: FileRef): Promise<Blob> {
  const reader = res.body?.getReader();
  const parts: Uint8Array[] = [];
  const hasher = new core.Hasher();
  let got = 0;
  try {
    for (;;) {
      const { done, value } = reader ? await reader.read() : { done: true, value: undefined };
      if (done || !value) break;
      got += value.length;
      if (got > ref.size) {
        await reader?.cancel();
        throw mismatch(ref);
      }
      hasher.update(value);
      parts.push(value);
    }
  } catch (e) {
    hasher.free();
    throw e;
  }
  if (hasher.finish() !== ref.sha256 || got !== ref.size) throw mismatch(ref);
  return new Blob(parts as BlobPart[], { type: ref.media_type });
}
