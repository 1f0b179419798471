// A todo app on Ferry's browser client: works offline from the first
// visit, syncs live between windows and devices once signed in, shows the
// sync status and lets the person settle edits that crossed.

import {
  Ferry,
  FerryError,
  type FileRef,
  type LocalRecord,
  type StoredConflict,
  type SyncStatus,
} from "../../../clients/js/src/index.js";
// The demo's schema (ferry.schema.toml) as types, by `ferry schema typescript`.
import type { Schema, Todos } from "./schema.js";

const COLLECTION = "todos";
type Filter = "all" | "active" | "done";

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

let ferry: Ferry<Schema>;
let filter: Filter = "all";
let renderQueued = false;

function newId(): string {
  const time = Date.now().toString(36).padStart(9, "0");
  const rand = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
  return `t-${time}-${rand}`;
}

function queueRender(): void {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    void render();
  });
}

async function render(): Promise<void> {
  const space = ferry.personalSpace();
  const all = await ferry.list(space, COLLECTION, { orderBy: ["created", "asc"] });
  const shown = all.filter((t) => filter === "all" || (filter === "done") === Boolean(t.fields.done));
  const list = $("todos");
  list.replaceChildren(...shown.map(todoItem));
  $("empty").hidden = shown.length > 0;
  const left = all.filter((t) => !t.fields.done).length;
  $("count").textContent = `${left} ${left === 1 ? "item" : "items"} left`;
  $("clear-done").hidden = !all.some((t) => t.fields.done);
  await renderConflicts();
}

function todoItem(todo: LocalRecord<Todos>): HTMLElement {
  const li = document.createElement("li");
  li.className = `todo${todo.fields.done ? " done" : ""}`;
  li.dataset.id = todo.id;
  li.dataset.testid = "todo";
  const check = document.createElement("input");
  check.type = "checkbox";
  check.checked = Boolean(todo.fields.done);
  check.setAttribute("aria-label", "Done");
  check.addEventListener("change", () => void write(() => ferry.patch(ferry.personalSpace(), COLLECTION, todo.id, { done: check.checked })));
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = String(todo.fields.title ?? "");
  title.title = "Double-click to edit";
  title.addEventListener("dblclick", () => edit(li, title, todo));
  const remove = document.createElement("button");
  remove.className = "quiet remove";
  remove.type = "button";
  remove.textContent = "✕";
  remove.setAttribute("aria-label", "Delete");
  remove.addEventListener("click", () => void write(() => ferry.delete(ferry.personalSpace(), COLLECTION, todo.id)));
  const attach = document.createElement("label");
  attach.className = "quiet attach";
  attach.title = "Attach an image";
  attach.textContent = "📎";
  const picker = document.createElement("input");
  picker.type = "file";
  picker.accept = "image/*";
  picker.hidden = true;
  picker.setAttribute("aria-label", "Attach an image");
  picker.addEventListener("change", () => {
    const file = picker.files?.[0];
    if (!file) return;
    const space = ferry.personalSpace();
    // The bytes are kept here and upload after the todo syncs, offline too.
    void write(async () => ferry.patch(space, COLLECTION, todo.id, { attachment: await ferry.attach(space, file) }));
  });
  attach.append(picker);
  li.append(check, title, attach, remove);
  const ref = todo.fields.attachment;
  if (ref) li.append(attachmentView(ref));
  return li;
}

/** Object URLs of the images shown, by hash: the bytes under a hash never change. */
const imageUrls = new Map<string, string>();
/** Images that could not be read, by hash, until an event about them: not asked again at each render. */
const imageFailures = new Map<string, string>();

/** Forgets every image shown (a sign-in or sign-out: the next person sees none of them). */
function forgetImages(): void {
  for (const url of imageUrls.values()) URL.revokeObjectURL(url);
  imageUrls.clear();
  imageFailures.clear();
}

/** A todo's image, or what keeps it from showing (not uploaded yet, an upload's progress). */
function attachmentView(ref: FileRef): HTMLElement {
  const box = document.createElement("div");
  box.className = "attachment";
  box.dataset.testid = "attachment";
  box.dataset.sha256 = ref.sha256;
  const space = ferry.personalSpace();
  void (async () => {
    const status = await ferry.fileStatus(space, ref.sha256);
    box.dataset.upload = status.state;
    let url = imageUrls.get(ref.sha256);
    const failure = imageFailures.get(ref.sha256);
    if (!url && failure) {
      box.dataset.state = "error";
      box.textContent = failure;
      return;
    }
    if (!url && status.state === "missing") {
      // Asked for again by the sync; `onFile` draws it once it is here.
      box.dataset.state = "missing";
      box.textContent = "Waiting for the image to be uploaded…";
      return;
    }
    try {
      if (!url) {
        url = URL.createObjectURL(await ferry.file(space, ref));
        imageUrls.set(ref.sha256, url);
      }
    } catch (e) {
      box.dataset.state = e instanceof FerryError && e.code === "missing" ? "missing" : "error";
      box.textContent = box.dataset.state === "missing" ? "Waiting for the image to be uploaded…" : `The image cannot be shown: ${e}`;
      if (box.dataset.state === "error") imageFailures.set(ref.sha256, box.textContent);
      return;
    }
    const img = document.createElement("img");
    img.src = url;
    img.alt = ref.name ?? "attached image";
    box.dataset.state = "shown";
    const note = document.createElement("span");
    note.className = "muted upload-note";
    if (status.state === "local") note.textContent = "Uploads when online";
    if (status.state === "uploading") note.textContent = `Uploading ${Math.round((100 * status.sent) / Math.max(1, status.total))}%`;
    if (status.state === "failed") note.textContent = `Upload refused: ${status.message}`;
    box.replaceChildren(img, note);
  })();
  return box;
}

function edit(li: HTMLElement, title: HTMLElement, todo: LocalRecord<Todos>): void {
  const input = document.createElement("input");
  input.className = "edit";
  input.value = String(todo.fields.title ?? "");
  let done = false;
  const save = () => {
    if (done) return;
    done = true;
    const text = input.value.trim();
    if (text && text !== todo.fields.title) {
      void write(() => ferry.patch(ferry.personalSpace(), COLLECTION, todo.id, { title: text }));
    } else {
      queueRender();
    }
  };
  input.addEventListener("keydown", (e) => {
    if (e.key === "Enter") save();
    if (e.key === "Escape") {
      done = true;
      queueRender();
    }
  });
  input.addEventListener("blur", save);
  li.replaceChild(input, title);
  input.focus();
}

async function write(f: () => Promise<unknown>): Promise<void> {
  try {
    await f();
  } catch (e) {
    alert(e instanceof Error ? e.message : String(e));
  }
  // Settling a conflict by taking the other version changes no record, so
  // no change notice comes: draw again all the same.
  queueRender();
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return "(empty)";
  return typeof value === "string" ? value : JSON.stringify(value);
}

async function renderConflicts(): Promise<void> {
  const conflicts = await ferry.conflicts();
  $("conflicts").hidden = conflicts.length === 0;
  $("conflict-list").replaceChildren(...conflicts.map(conflictItem));
}

function conflictItem(stored: StoredConflict): HTMLElement {
  const c = stored.conflict;
  const li = document.createElement("li");
  li.className = "conflict";
  li.dataset.testid = "conflict";
  const what = document.createElement("div");
  if (c.kind === "record_deleted") {
    what.textContent = "A todo you edited was deleted on another device. What you wrote:";
    const lost = document.createElement("dl");
    lost.className = "lost";
    const fields = (c.yours?.value ?? {}) as Record<string, { value: unknown }>;
    for (const [name, f] of Object.entries(fields)) {
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = describe(f?.value);
      lost.append(dt, dd);
    }
    const choices = document.createElement("div");
    choices.className = "choices";
    const restore = document.createElement("button");
    restore.type = "button";
    restore.dataset.action = "restore";
    restore.textContent = "Restore as a new todo";
    // A restored todo keeps its place: it had a `created` of its own, or
    // takes now.
    restore.addEventListener("click", () => void write(() => restoreTodo(stored)));
    restore.hidden = Object.keys(fields).length === 0;
    const ok = document.createElement("button");
    ok.type = "button";
    ok.dataset.action = "dismiss";
    ok.className = "quiet";
    ok.textContent = "Let it go";
    ok.addEventListener("click", () => void write(() => ferry.resolve(stored.n, { keep: "theirs" })));
    choices.append(restore, ok);
    li.append(what, lost, choices);
    return li;
  }
  what.textContent = `The ${c.field} of a todo was changed on two devices.`;
  const choices = document.createElement("div");
  choices.className = "choices";
  const option = (label: string, value: unknown, keep: "mine" | "theirs") => {
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.keep = keep;
    const small = document.createElement("span");
    small.textContent = label;
    b.append(small, describe(value));
    b.addEventListener("click", () => void write(() => ferry.resolve(stored.n, { keep })));
    return b;
  };
  choices.append(option("Yours", c.yours?.value, "mine"), option("The other device's (kept for now)", c.winner?.value, "theirs"));
  li.append(what, choices);
  return li;
}

async function restoreTodo(stored: StoredConflict): Promise<void> {
  const id = await ferry.restore(stored.n, newId());
  const restored = await ferry.get(ferry.personalSpace(), COLLECTION, id);
  // Only what this device wrote came back: a todo needs its title, order
  // and state, whichever device last wrote them.
  const missing: Record<string, unknown> = {};
  if (restored?.fields.title == null) missing.title = "(restored)";
  if (restored?.fields.created == null) missing.created = Date.now();
  if (restored?.fields.done == null) missing.done = false;
  if (Object.keys(missing).length > 0) await ferry.patch(ferry.personalSpace(), COLLECTION, id, missing);
}

function showStatus(s: SyncStatus): void {
  const el = $("status");
  let state: string = s.state;
  let text: string;
  const pending = s.pending > 0 ? ` · ${s.pending} pending` : "";
  switch (s.state) {
    case "signed_out":
      state = "local";
      // Nothing waits for a server before sign-in: the todos are simply here.
      text = ferry.user ? "Signed out of sync" : "On this device";
      break;
    case "offline":
      text = `Offline${pending}`;
      break;
    case "syncing":
      text = "Syncing…";
      break;
    case "paused":
      text = `Sync paused${pending}`;
      break;
    case "error":
      text = `Sync error${pending}`;
      break;
    default:
      if (s.pending > 0) {
        state = "pending";
        text = `${s.pending} pending`;
      } else {
        text = "Synced";
      }
  }
  const note = $("sync-note");
  note.hidden = !(s.state === "paused" || s.state === "error") || !s.error;
  // Written only while shown: a round under way keeps the last reason.
  if (!note.hidden) {
    note.textContent =
      s.state === "paused"
        ? `${s.error} Your todos stay on this device and sync once it is active.`
        : `Sync failed: ${s.error} It will try again.`;
  }
  el.dataset.state = state;
  el.dataset.pending = String(s.pending);
  el.title = s.error ?? (s.lastSyncedAt ? `Last synced ${new Date(s.lastSyncedAt).toLocaleTimeString()}` : "");
  $("status-text").textContent = text;
  document.body.dataset.leader = String(s.leader);
  void showTabRole();
}

let tabRoleAsked = 0;

/** Which tab syncs, said only when this one is not alone. */
async function showTabRole(): Promise<void> {
  const asked = ++tabRoleAsked;
  const others = await ferry.otherTabs();
  // An answer to an older question than the last one changes nothing.
  if (asked !== tabRoleAsked) return;
  const role = $("tab-role");
  role.textContent =
    others === 0 ? "" : ferry.isLeader ? "This tab syncs for the others." : "Another tab syncs for this one.";
  role.hidden = others === 0;
}

function linkToken(): string | null {
  if (location.pathname !== "/auth/magic-link") return null;
  return new URLSearchParams(location.hash.slice(1)).get("token");
}

function showAccount(): void {
  const user = ferry.user;
  const token = user ? null : linkToken();
  $("signed-in").hidden = !user;
  $("signed-out").hidden = Boolean(user) || token !== null;
  $("finish").hidden = token === null;
  if (user) $("user-email").textContent = user.email ?? user.id;
}

function note(id: string, text: string, error = false): void {
  const el = $(id);
  el.hidden = false;
  el.textContent = text;
  el.classList.toggle("error", error);
}

function wire(): void {
  $("new-todo").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $<HTMLInputElement>("new-title");
    const title = input.value.trim();
    if (!title) return;
    input.value = "";
    void write(() => ferry.put(ferry.personalSpace(), COLLECTION, newId(), { title, done: false, created: Date.now() }));
  });
  $("clear-done").addEventListener("click", async () => {
    const space = ferry.personalSpace();
    for (const t of await ferry.list(space, COLLECTION, { where: [["done", "=", true]] })) {
      await write(() => ferry.delete(space, COLLECTION, t.id));
    }
  });
  for (const b of document.querySelectorAll<HTMLButtonElement>(".filters button")) {
    b.addEventListener("click", () => {
      filter = b.dataset.filter as Filter;
      for (const other of document.querySelectorAll(".filters button")) other.classList.toggle("active", other === b);
      queueRender();
    });
  }
  $("signin-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const email = $<HTMLInputElement>("email").value.trim();
    try {
      await ferry.requestMagicLink(email);
      note(
        "signin-note",
        `A sign-in link is on its way to ${email}. Running Ferry on this machine? ` +
          "The link is printed in the terminal where ferry serve runs.",
      );
    } catch (err) {
      note("signin-note", err instanceof Error ? err.message : String(err), true);
    }
  });
  $("finish-button").addEventListener("click", async () => {
    const token = linkToken();
    if (!token) return;
    $<HTMLButtonElement>("finish-button").disabled = true;
    try {
      await ferry.signInWithLink(token);
      history.replaceState(null, "", "/");
      showAccount();
      queueRender();
    } catch (err) {
      history.replaceState(null, "", "/");
      $<HTMLButtonElement>("finish-button").disabled = false;
      // Shown in the sign-in form the person goes back to, where a new
      // link is asked for.
      const reason = err instanceof Error ? err.message : String(err);
      note("signin-note", `That link did not sign you in: ${reason}. Ask for a new link.`, true);
      $("signed-out").hidden = false;
      $("finish").hidden = true;
    }
  });
  $("signout").addEventListener("click", async () => {
    await ferry.signOut();
    showAccount();
    queueRender();
  });
}

async function main(): Promise<void> {
  ferry = await Ferry.open<Schema>({ name: "todo" });
  // For a look from the browser's console (and the browser tests).
  (globalThis as { ferry?: Ferry<Schema> }).ferry = ferry;
  wire();
  ferry.subscribe(queueRender);
  // An image arriving, or an upload moving on.
  ferry.onFile((e) => {
    imageFailures.delete(e.sha256);
    queueRender();
  });
  ferry.onStatus((s) => {
    showStatus(s);
    queueRender();
  });
  ferry.onSession(() => {
    forgetImages();
    showAccount();
    queueRender();
  });
  showAccount();
  await render();
  // Tabs opening and closing change nothing this tab is told of: look again
  // now and then, and when the person comes back to it.
  setInterval(() => void showTabRole(), 3000);
  addEventListener("focus", () => void showTabRole());
  document.body.dataset.ready = "true";
}

void main();
