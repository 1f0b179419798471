import { mount } from "svelte";

import App from "./App.svelte";
import { openFerry } from "./common.js";

const ferry = await openFerry("svelte");
mount(App, { target: document.getElementById("app"), props: { ferry, space: ferry.personalSpace() } });
document.body.dataset.ready = "true";
