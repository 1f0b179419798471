// The app's schema as TypeScript types, written by `ferry schema typescript`
// from the schema file: edit that file and write this one again.

/** A record of `todos`. */
export type Todos = {
  attachment?: { sha256: string; size: number; media_type: string; name?: string } | null;
  created?: number | null;
  done?: boolean | null;
  title: string;
};

/** Every declared collection's record type, by name. */
export type Schema = {
  todos: Todos;
};
