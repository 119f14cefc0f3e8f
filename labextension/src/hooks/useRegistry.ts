import * as React from 'react';

import {
  IRegistryListing,
  IRegistryVersion,
  listRegistry,
  promoteVersion,
  pushProject,
  rollbackAlias
} from '../handler';

/** What an action did, in one sentence: its note when it worked, the server's message when not. */
export interface IActionOutcome<T> {
  value: T | null;
  message: string;
}

export interface IRegistry {
  listing: IRegistryListing | null;
  /** The last failure, as the server's one sentence (listing or an action). */
  error: string | null;
  /** A short note on the last action that worked, e.g. "production now points to 3". */
  notice: string | null;
  /** The action in flight, e.g. "push", "promote churn 3", so its button can show it. */
  pending: string | null;
  refresh: () => Promise<void>;
  push: (project: string) => Promise<IActionOutcome<IRegistryVersion>>;
  promote: (name: string, version: string, alias: string) => Promise<boolean>;
  rollback: (name: string, alias: string) => Promise<boolean>;
}

/** The registry's versions and aliases of this notebook's models, and the actions on them. */
export function useRegistry(notebookPath: string): IRegistry {
  const [listing, setListing] = React.useState<IRegistryListing | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [notice, setNotice] = React.useState<string | null>(null);
  const [pending, setPending] = React.useState<string | null>(null);

  const refresh = React.useCallback(async () => {
    if (!notebookPath) {
      setListing(null);
      return;
    }
    try {
      setListing(await listRegistry(notebookPath));
      setError(null);
    } catch (reason) {
      const message = (reason as Error).message;
      // A bare 404 is a server without the registry endpoints (an older jupyter-mlship), not a registry error.
      setError(
        /^404\b/.test(message)
          ? "This Jupyter server's jupyter-mlship has no model registry: upgrade it where JupyterLab runs, then restart JupyterLab."
          : message
      );
    }
  }, [notebookPath]);

  React.useEffect(() => {
    setNotice(null);
    void refresh();
  }, [refresh]);

  /**
   * Run one action; the listing is re-read either way. Its sentence shows in the registry section,
   * unless `shownByCaller` (a Push shows its outcome beside its own button).
   */
  const act = async <T>(
    label: string,
    action: () => Promise<T>,
    done: (value: T) => string,
    shownByCaller = false
  ): Promise<IActionOutcome<T>> => {
    setPending(label);
    setNotice(null);
    let outcome: IActionOutcome<T>;
    try {
      const value = await action();
      outcome = { value, message: done(value) };
    } catch (reason) {
      outcome = { value: null, message: (reason as Error).message };
    }
    // The listing first, so the sentence and the versions and aliases it speaks of show together.
    await refresh();
    if (!shownByCaller) {
      setError(outcome.value === null ? outcome.message : null);
      setNotice(outcome.value === null ? null : outcome.message);
    }
    setPending(null);
    return outcome;
  };

  return {
    listing,
    error,
    notice,
    pending,
    refresh,
    push: project =>
      act(`push ${project}`, () => pushProject(project), v =>
          v.created === false
            ? `Already in the registry as version ${v.version}: the same files, nothing was pushed.`
            : `Pushed to the registry as version ${v.version}.`,
        true
      ),
    promote: async (name, version, alias) =>
      (await act(
        `promote ${name} ${version}`,
        () => promoteVersion(name, version, alias),
        s => `${alias} of ${name} now points to version ${s.version}.`
      )).value !== null,
    rollback: async (name, alias) =>
      (await act(
        `rollback ${name} ${alias}`,
        () => rollbackAlias(name, alias),
        s => `${alias} of ${name} rolled back to version ${s.version}.`
      )).value !== null
  };
}
