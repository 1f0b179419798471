// The todo demo again, in React: every list is a live query (`useQuery`)
// that keeps itself current as this window, other windows and other
// devices write; no code here re-reads anything. It shares the replica
// (and the signed-in session) of the demo at `/`, where people sign in.

import { type FormEvent, StrictMode, memo, useCallback, useState, useSyncExternalStore } from "react";
import { createRoot } from "react-dom/client";

import { Ferry, type Filter, type LocalRecord } from "../../../../clients/js/src/index.js";
import { FerryProvider, ferryHooks, useSyncStatus } from "../../../../clients/js/src/react.js";
import type { Schema, Todos } from "../schema.js";

const { useFerry, useQuery } = ferryHooks<Schema>();
type Show = "all" | "active" | "done";
type Order = "created" | "title";

function newId(): string {
  const time = Date.now().toString(36).padStart(9, "0");
  const rand = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(16).padStart(2, "0")).join("");
  return `t-${time}-${rand}`;
}

/** One row; `memo` skips it while its record (the same object) is unchanged. */
const Todo = memo(function Todo({ todo, space }: { todo: LocalRecord<Todos>; space: string }) {
  const ferry = useFerry();
  return (
    <li className={`todo${todo.fields.done ? " done" : ""}`} data-testid="todo" data-id={todo.id}>
      <input
        type="checkbox"
        aria-label="Done"
        checked={Boolean(todo.fields.done)}
        onChange={(e) => void ferry.patch(space, "todos", todo.id, { done: e.target.checked })}
      />
      <span className="title">{todo.fields.title}</span>
      <button type="button" className="quiet delete" aria-label="Delete" onClick={() => void ferry.delete(space, "todos", todo.id)}>
        ×
      </button>
    </li>
  );
});

function Status() {
  const s = useSyncStatus();
  const text = s.state === "idle" ? (s.pending ? `${s.pending} to sync` : "Synced") : s.state.replace("_", " ");
  return (
    <div className="status" data-testid="status" data-state={s.state} data-pending={s.pending}>
      <span className="dot" />
      <span>{text}</span>
    </div>
  );
}

function TodoList({ space }: { space: string }) {
  const ferry = useFerry();
  const [show, setShow] = useState<Show>("all");
  const [order, setOrder] = useState<Order>("created");
  const [title, setTitle] = useState("");
  const where: Filter<Todos>[] = show === "all" ? [] : [["done", show === "done" ? "=" : "!=", true]];
  const { rows, status } = useQuery(space, "todos", { where, orderBy: [[order, "asc"]] });
  const left = useQuery(space, "todos", { where: [["done", "!=", true]] }).rows.length;
  const add = (e: FormEvent) => {
    e.preventDefault();
    const t = title.trim();
    if (!t) return;
    setTitle("");
    void ferry.put(space, "todos", newId(), { title: t, done: false, created: Date.now() });
  };
  return (
    <main className="card">
      <form className="row" onSubmit={add}>
        <input id="new-title" value={title} onChange={(e) => setTitle(e.target.value)} placeholder="What needs doing?" aria-label="New todo" maxLength={500} />
        <button type="submit">Add</button>
      </form>
      <ul className="todos" data-testid="todos" data-status={status}>
        {rows.map((t) => (
          <Todo key={t.id} todo={t} space={space} />
        ))}
      </ul>
      {rows.length === 0 && status !== "loading" ? <p className="empty">Nothing here.</p> : null}
      <footer className="row between">
        <span className="muted" data-testid="count">
          {left} {left === 1 ? "item" : "items"} left
        </span>
        <nav className="filters">
          {(["all", "active", "done"] as Show[]).map((f) => (
            <button key={f} type="button" data-filter={f} className={show === f ? "active" : ""} onClick={() => setShow(f)}>
              {f[0].toUpperCase() + f.slice(1)}
            </button>
          ))}
        </nav>
        <button type="button" className="quiet" data-order={order === "created" ? "title" : "created"} onClick={() => setOrder(order === "created" ? "title" : "created")}>
          {order === "created" ? "Sort by title" : "Sort by age"}
        </button>
      </footer>
    </main>
  );
}

/** The signed-in user, following sign-ins and sign-outs in any tab. */
function useUser(ferry: Ferry<Schema>) {
  const subscribe = useCallback((changed: () => void) => ferry.onSession(() => changed()), [ferry]);
  return useSyncExternalStore(subscribe, () => ferry.user);
}

function App({ ferry }: { ferry: Ferry<Schema> }) {
  const user = useUser(ferry);
  const space = ferry.personalSpace();
  return (
    <>
      <header>
        <div className="brand">
          Ferry <span className="muted">todos in React</span>
        </div>
        <Status />
      </header>
      <section className="card account">
        {user ? (
          <span data-testid="user">Signed in as <b>{user.email ?? user.id}</b></span>
        ) : (
          <span>
            Your todos live in this browser. <a href="/">Sign in on the main demo</a> to sync them.
          </span>
        )}
      </section>
      <TodoList key={space} space={space} />
      <p className="foot muted">The same todos as the demo at <a href="/">/</a>, rendered with Ferry's React hooks.</p>
    </>
  );
}

const ferry = await Ferry.open<Schema>({ name: "todo" });
(window as unknown as { ferry: Ferry<Schema> }).ferry = ferry;
createRoot(document.getElementById("root") as HTMLElement).render(
  <StrictMode>
    <FerryProvider ferry={ferry}>
      <App ferry={ferry} />
    </FerryProvider>
  </StrictMode>,
);
document.body.dataset.ready = "true";
