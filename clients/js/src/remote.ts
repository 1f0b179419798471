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
  // A file's HEAD: how much of a broken-off upload the server holds.
  const offset = res.headers.get("Ferry-Upload-Offset");
  if (details === null && offset !== null) details = { offset: Number(offset) };
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
   * A request with the session's token whose answer is not JSON (a file's
   * bytes); a 401 is answered by one refresh, any other failure throws.
   */
  async raw(path: string, init: RequestInit = {}): Promise<Response> {
    let session = await this.freshToken();
    for (let tries = 0; ; tries++) {
      let res: Response;
      try {
        res = await fetch(session.server + path, withToken(withProtocol(init), session.accessToken));
      } catch (e) {
        throw new FerryError(`the server is unreachable: ${e instanceof Error ? e.message : e}`, "offline");
      }
      if (res.ok) return res;
      if (res.status !== 401 || tries > 0) throw await failure(res);
      session = await this.refresh(session.accessToken);
    }
  }

  /**
   * Sends `body` with the session's token, telling `progress` how many of
   * its bytes went out (fetch cannot, so this is an XMLHttpRequest); a 401
   * is answered by one refresh.
   */
  async send(
    path: string,
    method: string,
    headers: Record<string, string>,
    body: Blob,
    signal: AbortSignal,
    progress: (sent: number) => void,
  ): Promise<void> {
    let session = await this.freshToken();
    for (let tries = 0; ; tries++) {
      const auth = { ...headers, "Ferry-Protocol": protocolVersion(), Authorization: `Bearer ${session.accessToken}` };
      const res = await xhr(session.server + path, method, auth, body, signal, progress);
      if (res.ok) return;
      if (res.status !== 401 || tries > 0) throw await failure(res);
      session = await this.refresh(session.accessToken);
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

function withProtocol(init: RequestInit): RequestInit {
  return { ...init, headers: { "Ferry-Protocol": protocolVersion(), ...(init.headers ?? {}) } };
}

/** An XMLHttpRequest as a `Response`; network failures become `offline` errors. */
function xhr(
  url: string,
  method: string,
  headers: Record<string, string>,
  body: Blob,
  signal: AbortSignal,
  progress: (sent: number) => void,
): Promise<Response> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(new FerryError("the transfer was stopped", "offline"));
    const req = new XMLHttpRequest();
    signal.addEventListener("abort", () => req.abort(), { once: true });
    req.open(method, url);
    for (const [k, v] of Object.entries(headers)) req.setRequestHeader(k, v);
    req.upload.onprogress = (e) => progress(e.loaded);
    req.onload = () => {
      const answer = new Headers();
      for (const line of req.getAllResponseHeaders().trim().split(/[\r\n]+/)) {
        const at = line.indexOf(":");
        if (at > 0) answer.append(line.slice(0, at).trim(), line.slice(at + 1).trim());
      }
      // 204 and 304 carry no body.
      const empty = req.status === 204 || req.status === 304;
      resolve(new Response(empty ? null : req.responseText, { status: req.status, headers: answer }));
    };
    req.onerror = () => reject(new FerryError("the server is unreachable", "offline"));
    req.ontimeout = req.onerror;
    req.onabort = req.onerror;
    req.send(body);
  });
}

function withToken(init: RequestInit, token: string): RequestInit {
  return { ...init, headers: { ...(init.headers ?? {}), Authorization: `Bearer ${token}` } };
}
