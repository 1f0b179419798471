// One sync of one space, step by step, as the native client does it:
//
// 1. `Store.nextBatch` takes the batch sent before and not acknowledged,
//    or stamps the oldest pending changes with a new batch id.
// 2. The batch goes to `POST /v1/spaces/{space}/sync` with the cursor.
// 3. `Store.storeAnswer` removes the acknowledged changes, stores the
//    conflicts, merges the pulled page and moves the cursor, in one
//    transaction.
//
// Loop until nothing is pending and the server has nothing more. A `410
// cursor_expired` pulls the space again from 0, sending nothing until the
// pull is done (and so does a first sync with changes waiting); records the
// server had and no longer has were deleted there, and go with their pending
// changes. Changes the server refuses
// for good (`403`, `422 invalid_change`, `413`) move to the rejected list so
// that the outbox never jams.

import type { Remote } from "./remote.js";
import type { Store } from "./store.js";
import { type Changed, FerryError, type HeldSchema, type SyncAnswer, type SyncReport } from "./types.js";

/** The page size asked for. */
export const PAGE = 5000;

function refusedForGood(e: FerryError): boolean {
  return e.code === "forbidden" || e.code === "invalid_change" || e.code === "too_large";
}

/** Whether the server refused a change for carrying `base`, as servers before protocol v1.2 do. */
function refusesBases(e: FerryError): boolean {
  return e.code === "invalid_change" && e.message.includes("unknown field `base`");
}

/** Syncs `space` once; `changed` hears every record stored. */
export async function syncSpace(
  store: Store,
  remote: Remote,
  space: string,
  changed: (c: Changed[]) => void,
): Promise<SyncReport> {
  const total: SyncReport = { pushed: 0, pulled: 0, conflicts: 0, rejected: 0, resynced: false, expired: false };
  if (space.startsWith("local:")) return total;
  // Another tab may have wiped the replica, which renews its id.
  const clientId = await store.currentClientId();
  for (;;) {
    const outgoing = await store.nextBatch(space);
    const { cursor, conflictCursor } = await store.cursors(space);
    const body = {
      client_id: clientId,
      cursor,
      limit: PAGE,
      // Reports already taken are not sent again while a resync pulls from 0.
      ...(conflictCursor > cursor ? { conflict_cursor: conflictCursor } : {}),
      ...(outgoing ? { batch_id: outgoing.batchId, changes: outgoing.changes } : {}),
    };
    let answer: SyncAnswer;
    try {
      answer = await remote.authed<SyncAnswer>(`/v1/spaces/${encodeURIComponent(space)}/sync`, {
        method: "POST",
        body: JSON.stringify(body),
      });
    } catch (e) {
      if (!(e instanceof FerryError)) throw e;
      if (e.code === "cursor_expired") {
        total.expired = true;
        await store.beginResync(space);
        continue;
      }
      if (outgoing && refusesBases(e) && outgoing.changes.some((c) => c.base !== undefined)) {
        // A server before protocol v1.2 (an old node during an upgrade):
        // the same batch without bases goes through.
        await store.stripBases(space, outgoing.batchId);
        continue;
      }
      if (outgoing && refusedForGood(e)) {
        const rejected = await store.rejectBatch(space, outgoing.batchId, e);
        total.rejected += rejected.count;
        changed(rejected.changed);
        continue;
      }
      throw e;
    }
    const version = answer.schema_version ?? 0;
    if (version !== 0 && version !== (await store.appSchema()).version) {
      // A newer schema of the app is in force: later writes are judged by it.
      await store.holdAppSchema(await remote.authed<HeldSchema>("/v1/schema"));
    }
    const stored = await store.storeAnswer(space, outgoing?.batchId ?? null, answer);
    total.pushed += stored.pushed;
    total.pulled += stored.pulled;
    total.conflicts += stored.conflicts;
    total.resynced ||= stored.resynced;
    if (stored.changed.length) changed(stored.changed);
    if (!answer.has_more && !stored.pending) return total;
  }
}
