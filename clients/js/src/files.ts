// Files in the browser (docs/files.md §6): attachments kept in the
// replica's IndexedDB beside the records, an upload queue the syncing tab
// runs after each space's records, downloads checked against their hash
// into a cache of bounded size, and a status per file.
//
// One store, `files`, keyed by (space, sha256), holds each file this
// device knows of: its reference, its bytes (a Blob, which IndexedDB
// keeps on disk apart from the record), and where it stands. An entry
// with `upload` set is pinned: its bytes are the only copy until the
// server holds them, so eviction never takes them.

import * as core from "./core.js";
import type { Remote } from "./remote.js";
import type { Store } from "./store.js";
import { type FileEvent, type FileRef, FerryError, type FileStatus } from "./types.js";

/** What the `files` store holds per (space, sha256). */
export interface FileEntry extends FileRef {
  space: string;
  /** The bytes, when on this device. */
  blob?: Blob;
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

export class Files {
  /** Uploads in flight in this tab or (as heard) another: (space, sha256) → [sent, total]. */
  private readonly progress = new Map<string, [number, number]>();

  constructor(
    private readonly store: Store,
    private readonly remote: Remote,
    private readonly maxCacheBytes: number,
    /** Tells this tab's listeners and the other tabs. */
    private readonly emit: (e: FileEvent) => void,
  ) {}

  /** Hashes `data`, keeps it (pinned) and queues its upload; its reference. */
  async attach(space: string, data: Blob | ArrayBuffer | ArrayBufferView, options: { name?: string; mediaType?: string } = {}): Promise<FileRef> {
    checkSpace(space);
    const blob = data instanceof Blob ? data : new Blob([data as BlobPart]);
    const name = options.name ?? (typeof File !== "undefined" && data instanceof File ? data.name : undefined);
    const ref = core.fileRef({
      sha256: await core.hashBlob(blob),
      size: blob.size,
      media_type: options.mediaType ?? (blob.type || "application/octet-stream"),
      ...(name ? { name } : {}),
    });
    const tx = this.store.db.transaction("files", "readwrite");
    const held = await tx.store.get([space, ref.sha256]);
    // Already on the server, or queued: nothing more to send.
    const synced = held?.blob !== undefined && held.upload === undefined;
    await tx.store.put({ ...ref, space, blob, ...(synced ? {} : { upload: "queued" as const }), usedAt: Date.now() });
    await tx.done;
    this.emit({ space, sha256: ref.sha256, state: synced ? "synced" : "local" });
    return ref;
  }

  async status(space: string, sha256: string): Promise<FileStatus> {
    const e = await this.store.db.get("files", [space, sha256]);
    return this.statusOf(e, space, sha256);
  }

  private statusOf(e: FileEntry | undefined, space: string, sha256: string): FileStatus {
    if (!e) return { state: "remote" };
    if (e.upload === "failed") {
      return { state: "failed", code: e.error?.code ?? "refused", message: e.error?.message ?? "" };
    }
    if (e.upload === "queued") {
      const p = this.progress.get(JSON.stringify([space, sha256]));
      return p ? { state: "uploading", sent: p[0], total: p[1] } : { state: "local" };
    }
    if (e.missing) return { state: "missing" };
    return { state: e.blob ? "synced" : "remote" };
  }

  /** What another tab said of a file's upload. */
  heard(e: FileEvent): void {
    const key = JSON.stringify([e.space, e.sha256]);
    if (e.state === "uploading") this.progress.set(key, [e.sent, e.total]);
    else this.progress.delete(key);
  }

  /**
   * The bytes of `file` in `space`: from this device, or downloaded (hash
   * and size checked) and kept. A file the server does not hold yet
   * throws `missing` and is asked for again at each sync of the space.
   */
  async file(space: string, file: FileRef): Promise<Blob> {
    checkSpace(space);
    const ref = core.fileRef(file);
    const tx = this.store.db.transaction("files", "readwrite");
    const held = await tx.store.get([space, ref.sha256]);
    if (held?.blob) {
      await tx.store.put({ ...held, usedAt: Date.now() });
      await tx.done;
      return held.blob;
    }
    await tx.done;
    if (space.startsWith("local:")) {
      throw new FerryError(`${ref.sha256} was not attached on this device`, "missing", 404);
    }
    return this.download(space, ref);
  }

  private async download(space: string, ref: FileRef): Promise<Blob> {
    let res: Response;
    try {
      res = await this.remote.raw(filePath(space, ref.sha256));
    } catch (e) {
      if (!(e instanceof FerryError && e.status === 404)) throw e;
      await this.markMissing(space, ref);
      // The same answer whether its author has not uploaded it yet or the
      // space is not the caller's: the server says no more.
      throw new FerryError(`the server does not hold ${ref.sha256} (yet)`, "missing", 404);
    }
    const blob = await res.blob();
    if (blob.size !== ref.size || (await core.hashBlob(blob)) !== ref.sha256) {
      throw new FerryError(`the server's bytes for ${ref.sha256} are not the file named`, "hash_mismatch", res.status);
    }
    await this.keep(space, ref, blob);
    return blob;
  }

  private async markMissing(space: string, ref: FileRef): Promise<void> {
    const tx = this.store.db.transaction("files", "readwrite");
    const held = await tx.store.get([space, ref.sha256]);
    const news = !held || (!held.blob && !held.missing);
    if (!held) await tx.store.put({ ...ref, space, missing: 1, usedAt: Date.now() });
    else if (news) await tx.store.put({ ...held, missing: 1 });
    await tx.done;
    // Said once: a view that asks again on each event must not loop.
    if (news) this.emit({ space, sha256: ref.sha256, state: "missing" });
  }

  /** Keeps downloaded bytes, unless the session ended meanwhile (a wipe must leave nothing). */
  private async keep(space: string, ref: FileRef, blob: Blob): Promise<void> {
    const tx = this.store.db.transaction(["files", "meta"], "readwrite");
    if (!(await tx.objectStore("meta").get("session"))) {
      tx.abort();
      await tx.done.catch(() => undefined);
      throw new FerryError("signed out while the file was on its way", "signed_out");
    }
    const held = await tx.objectStore("files").get([space, ref.sha256]);
    const { missing: _, ...rest } = held ?? { ...ref, space, usedAt: 0 };
    await tx.objectStore("files").put({ ...rest, blob, usedAt: Date.now() });
    await tx.done;
    this.emit({ space, sha256: ref.sha256, state: "synced" });
    await this.evict();
  }

  /** Drops the least recently used unpinned bytes while they pass the bound. */
  private async evict(): Promise<void> {
    const tx = this.store.db.transaction("files", "readwrite");
    const kept = (await tx.store.getAll()).filter((e) => e.blob && e.upload === undefined);
    let total = kept.reduce((n, e) => n + e.size, 0);
    kept.sort((a, b) => a.usedAt - b.usedAt);
    for (const e of kept) {
      if (total <= this.maxCacheBytes) break;
      await tx.store.delete([e.space, e.sha256]);
      total -= e.size;
    }
    await tx.done;
  }

  /** How many files of `space` wait on the server (missing). */
  async missing(space?: string): Promise<number> {
    const all = await this.store.db.getAll("files");
    return all.filter((e) => e.missing && (space === undefined || e.space === space)).length;
  }

  /**
   * After a sync of `space`: uploads its queued files (resuming what the
   * server holds of each), then asks again for its missing ones. Never
   * throws: a file's failure waits for a later sync, or, refused for
   * good, marks the file failed.
   */
  async run(space: string): Promise<void> {
    const entries = await this.store.db.getAll("files", IDBKeyRange.bound([space], [space, []]));
    for (const e of entries.filter((e) => e.upload === "queued")) {
      try {
        await this.upload(e);
      } catch (err) {
        const f = err instanceof FerryError ? err : new FerryError(String(err), "error");
        if (refusedForGood(f)) await this.fail(e, f);
        this.clearProgress(e);
        if (f.code === "offline") return;
      }
    }
    for (const e of entries.filter((e) => e.missing)) {
      try {
        await this.download(space, e);
      } catch (err) {
        if (err instanceof FerryError && err.code === "offline") return;
      }
    }
  }

  private clearProgress(e: FileEntry): void {
    this.progress.delete(JSON.stringify([e.space, e.sha256]));
  }

  private async fail(e: FileEntry, err: FerryError): Promise<void> {
    const tx = this.store.db.transaction("files", "readwrite");
    const held = await tx.store.get([e.space, e.sha256]);
    if (held?.upload === "queued") {
      await tx.store.put({ ...held, upload: "failed", error: { code: err.code, message: err.message } });
    }
    await tx.done;
    this.emit({ space: e.space, sha256: e.sha256, state: "failed", code: err.code, message: err.message });
  }

  /** Asks by hash, then sends what the server does not hold. */
  private async upload(e: FileEntry): Promise<void> {
    const path = filePath(e.space, e.sha256);
    const blob = e.blob;
    if (!blob || blob.size !== e.size) throw new FerryError("the attached bytes are gone from this device", "file_lost", 422);
    let offset = 0;
    try {
      await this.remote.raw(path, { method: "HEAD" });
      return this.uploaded(e);
    } catch (err) {
      if (!(err instanceof FerryError) || err.status !== 404) throw err;
      const held = Number(err.details?.offset ?? NaN);
      if (Number.isSafeInteger(held) && held > 0 && held < e.size) offset = held;
    }
    for (let tries = 0; ; tries++) {
      try {
        await this.put(e, path, blob, offset);
        return this.uploaded(e);
      } catch (err) {
        // The server holds another offset (a try it received after ours
        // broke off): send from there, once.
        const at = err instanceof FerryError && err.code === "conflict" ? Number(err.details?.offset ?? NaN) : NaN;
        if (tries > 0 || !Number.isSafeInteger(at) || at < 0 || at > e.size) throw err;
        offset = at === e.size ? 0 : at;
      }
    }
  }

  private put(e: FileEntry, path: string, blob: Blob, offset: number): Promise<void> {
    const headers: Record<string, string> = { "Content-Type": e.media_type };
    if (e.name) headers["Ferry-File-Name"] = encodeURIComponent(e.name);
    if (offset > 0) headers["Content-Range"] = `bytes ${offset}-${e.size - 1}/${e.size}`;
    let last = 0;
    return this.remote.send(path, "PUT", headers, blob.slice(offset), (sent) => {
      const now = Date.now();
      if (now - last < 100 && sent < blob.size - offset) return;
      last = now;
      this.progress.set(JSON.stringify([e.space, e.sha256]), [offset + sent, e.size]);
      this.emit({ space: e.space, sha256: e.sha256, state: "uploading", sent: offset + sent, total: e.size });
    });
  }

  private async uploaded(e: FileEntry): Promise<void> {
    this.clearProgress(e);
    const tx = this.store.db.transaction("files", "readwrite");
    const held = await tx.store.get([e.space, e.sha256]);
    if (held?.upload === "queued") {
      const { upload: _, error: __, missing: ___, ...rest } = held;
      await tx.store.put({ ...rest, usedAt: Date.now() });
    }
    await tx.done;
    this.emit({ space: e.space, sha256: e.sha256, state: "synced" });
    await this.evict();
  }
}
