import { For } from "solid-js";
import html from "solid-js/html";
import { render } from "solid-js/web";
import { createQuery, createSyncStatus } from "@ferry-sync/client/solid";

import { OPEN, openFerry } from "./common.js";

const ferry = await openFerry("solid");
const space = ferry.personalSpace();
render(() => {
  const open = createQuery(ferry, () => space, "todos", () => OPEN);
  const sync = createSyncStatus(ferry);
  return html`<p id="status" data-query=${() => open().status} data-sync=${() => sync().state}></p>
    <ul id="list">
      <${For} each=${() => open().rows}>
        ${(todo) => html`<li data-id=${todo.id}><span class="title">${todo.fields.title}</span></li>`}
      <//>
    </ul>`;
}, document.getElementById("app"));
document.body.dataset.ready = "true";
