// Compiled by `tsc -p clients/js/test-types` (scripts/build-web, so every
// test run): the browser client typed by an app's schema, as `ferry schema
// typescript` writes it (the todo demo's). Each `@ts-expect-error` line must
// fail to compile: were the types too loose, tsc would fail the build.

import type { Ferry } from "../src/index.js";
import type { Schema } from "../../../examples/todo/src/schema.js";

declare const typed: Ferry<Schema>;
declare const untyped: Ferry;
const space = "user:u";

export async function fits(): Promise<string | undefined> {
  await typed.put(space, "todos", "t1", { title: "Milk", done: false, created: 1 });
  await typed.patch(space, "todos", "t1", { done: true });
  await typed.patch(space, "todos", "t1", { done: null });
  await typed.delete(space, "todos", "t1");
  await typed.list(space, "todos", { where: [["done", "=", false]], orderBy: ["title", "desc"] });
  // Without a schema, anything goes, as before.
  await untyped.put(space, "anything", "x", { whatever: [1, "two"] });
  await untyped.list(space, "anything", { where: [["whatever", "=", 3]] });
  const todo = await typed.get(space, "todos", "t1");
  return todo?.fields.title;
}

export async function refused(): Promise<void> {
  // @ts-expect-error a misspelled field
  await typed.put(space, "todos", "t1", { titel: "Milk" });
  // @ts-expect-error a value of the wrong type
  await typed.patch(space, "todos", "t1", { done: "yes" });
  // @ts-expect-error the required title is missing
  await typed.put(space, "todos", "t1", { done: true });
  // @ts-expect-error a collection the schema does not declare
  await typed.put(space, "todo", "t1", { title: "Milk" });
  // @ts-expect-error a filter on a field the collection does not have
  await typed.list(space, "todos", { where: [["colour", "=", "red"]] });
  // @ts-expect-error a filter value of the wrong type
  await typed.list(space, "todos", { where: [["done", "=", "no"]] });
  // @ts-expect-error an order by a field the collection does not have
  await typed.list(space, "todos", { orderBy: ["colour"] });
  const todo = await typed.get(space, "todos", "t1");
  // @ts-expect-error a field the record does not have
  void todo?.fields.colour;
}
