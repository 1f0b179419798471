// The server: requests with the session's bearer token, errors read as
// PROTOCOL.md §10 says, and the refresh of an expired access token.
//
// Refresh tokens rotate and a used one revokes the whole session, so two
// tabs must never refresh at once: the refresh runs under a Web Lock, and
// a tab that gets the lock after another refreshed uses the new token.

import { protocolVersion } from "./core.js";
import type { Session, Store } from "./store.js";
import { FerryError, type User } from "./types.js";

export interface Tokens {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  user: User;
}

/** Reads an error answer; anything else becomes a clear FerryError. */
async function failure(res: Response): Promise<FerryError> {
  let code = `http_${res.status}`;
  let message = `the server answered ${res.status}`;
  let details: Record<string, unknown> | null = null;
  try {
    const body = await res.json();
    if (body?.error?.code) code = String(body.error.code);
    if (body?.error?.message) message = String(body.error.message);
    const d = body?.error?.details;
    if (d && typeof d === "object" && !Array.isArray(d)) details = d as Record<string, unknown>;
  } catch {
    // Not JSON: keep the status.
  }
  const retry = Number(res.headers.get("Retry-After"));
  return new FerryError(message, code, res.status, Number.isFinite(retry) && retry > 0 ? retry : null, details);
}

/** A request to `url`; network failures become `offline` errors. */
export async function request<T>(url: string, init: RequestInit = {}): Promise<T> {
  let res: Response;
  try {
    res = await fetch(url, {
      ...init,
      headers: { "Content-Type": "application/json", "Ferry-Protocol": protocolVersion(), ...(init.headers ?? {}) },
    });
  } catch (e) {
    throw new FerryError(`the server is unreachable: ${e instanceof Error ? e.message : e}`, "offline");
  }
  if (!res.ok) throw await failure(res);
  if (res.status === 204) return undefined as T;
  try {
    return (await res.json()) as T;
  } catch (e) {
    throw new FerryError(`the server's answer is not JSON: ${e}`, "invalid_answer", res.status);
  }
}

/** Runs `f` holding the Web Lock `name` (or directly without Web Locks). */
export function withLock<T>(name: string, f: () => Promise<T>): Promise<T> {
  if (typeof navigator !== "undefined" && navigator.locks) {
    return navigator.locks.request(name, f) as Promise<T>;
  }
  return f();
}

export class Remote {
  constructor(
    private readonly store: Store,
    private readonly lockPrefix: string,
  ) {}

  /** A request with the session's token; a 401 is answered by one refresh. */
  async authed<T>(path: string, init: RequestInit = {}): Promise<T> {
    const session = await this.store.session();
    if (!session) throw new FerryError("not signed in", "signed_out");
    try {
      return await request<T>(session.server + path, withToken(init, session.accessToken));
    } catch (e) {
      if (!(e instanceof FerryError) || e.status !== 401) throw e;
      const fresh = await this.refresh(session.accessToken);
      return request<T>(fresh.server + path, withToken(init, fresh.accessToken));
    }
  }

  /**
   * A fresh access token, replacing `stale`. When another tab refreshed
   * meanwhile, its token is used as it is.
   */
  async refresh(stale: string): Promise<Session> {
    return withLock(`${this.lockPrefix}:refresh`, async () => {
      const session = await this.store.session();
      if (!session) throw new FerryError("not signed in", "signed_out");
      if (session.accessToken !== stale) return session;
      if (!session.refreshToken) {
        throw new FerryError("the session expired; sign in again", "invalid_token", 401);
      }
      const tokens = await request<Tokens>(`${session.server}/v1/auth/refresh`, {
        method: "POST",
        body: JSON.stringify({ refresh_token: session.refreshToken }),
      });
      const expiresAt = Date.now() + tokens.expires_in * 1000;
      await this.store.setTokens(tokens.access_token, tokens.refresh_token, expiresAt);
      return { ...session, accessToken: tokens.access_token, refreshToken: tokens.refresh_token, expiresAt };
    });
  }

  /** A token valid for at least `marginMs` more, refreshing when needed. */
  async freshToken(marginMs = 30_000): Promise<Session> {
    const session = await this.store.session();
    if (!session) throw new FerryError("not signed in", "signed_out");
    if (session.expiresAt !== null && session.expiresAt - Date.now() < marginMs && session.refreshToken) {
      return this.refresh(session.accessToken);
    }
    return session;
  }
}

function withToken(init: RequestInit, token: string): RequestInit {
  return { ...init, headers: { ...(init.headers ?? {}), Authorization: `Bearer ${token}` } };
}
