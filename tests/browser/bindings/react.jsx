import { StrictMode, memo } from "react";
import { createRoot } from "react-dom/client";
import { FerryProvider, useQuery, useSyncStatus } from "@ferry-sync/client/react";

import { OPEN, openFerry } from "./common.js";

const Row = memo(function Row({ todo }) {
  window.renders[todo.id] = (window.renders[todo.id] ?? 0) + 1;
  return (
    <li data-id={todo.id}>
      <span className="title">{todo.fields.title}</span>
    </li>
  );
});

function Todos({ space }) {
  // A new query object on every render: the hook keys it by its JSON.
  const { rows, status } = useQuery(space, "todos", { ...OPEN });
  const sync = useSyncStatus();
  return (
    <>
      <p id="status" data-query={status} data-sync={sync.state} />
      <ul id="list">
        {rows.map((t) => (
          <Row key={t.id} todo={t} />
        ))}
      </ul>
    </>
  );
}

const ferry = await openFerry("react");
createRoot(document.getElementById("app")).render(
  <StrictMode>
    <FerryProvider ferry={ferry}>
      <Todos space={ferry.personalSpace()} />
    </FerryProvider>
  </StrictMode>,
);
document.body.dataset.ready = "true";
