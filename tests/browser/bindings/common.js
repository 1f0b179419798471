// What the binding test apps share: the replica, opened against the server
// the page's URL names, and the list's DOM watched for changes, so the test
// can tell which rows a write re-rendered.

import { Ferry } from "@ferry-sync/client";

export async function openFerry(framework) {
  const server = new URLSearchParams(location.search).get("server");
  const ferry = await Ferry.open({ server, name: `bindings-${framework}` });
  window.ferry = ferry;
  window.renders = {};
  return ferry;
}

/** The query every app renders: open todos by title. */
export const OPEN = { where: [["done", "=", false]], orderBy: ["title", "asc"] };

/**
 * Remembers each row's element and notes rows whose subtree the framework
 * touches from now on.
 */
window.markRows = () => {
  window.rowNodes = new Map([...document.querySelectorAll("#list li")].map((li) => [li.dataset.id, li]));
  window.touched = new Set();
  window.observer?.disconnect();
  window.observer = new MutationObserver((records) => {
    for (const r of records) {
      const li = (r.target.nodeType === 1 ? r.target : r.target.parentElement)?.closest?.("li");
      if (li?.dataset.id) window.touched.add(li.dataset.id);
    }
  });
  window.observer.observe(document.getElementById("list"), { subtree: true, childList: true, characterData: true, attributes: true });
};

window.rowKept = (id) => window.rowNodes.get(id) === document.querySelector(`#list li[data-id="${id}"]`) && !window.touched.has(id);
