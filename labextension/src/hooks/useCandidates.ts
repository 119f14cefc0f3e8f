import { NotebookPanel } from '@jupyterlab/notebook';
import * as React from 'react';

import { checkReady, ICandidates, listCandidates } from '../kernel';

export interface ICandidateListing {
  candidates: ICandidates | null;
  listing: boolean;
  /** Why the kernel cannot be read now (no kernel, an old jupyter-mlship, ...), as one sentence. */
  error: string | null;
  refresh: () => Promise<ICandidates | null>;
}

/** What the notebook's kernel holds that the form can offer; `busy()` true skips a refresh (a run is on). */
export function useCandidates(notebook: NotebookPanel | null, busy: () => boolean): ICandidateListing {
  const [candidates, setCandidates] = React.useState<ICandidates | null>(null);
  const [listing, setListing] = React.useState(false);
  const [error, setError] = React.useState<string | null>(null);

  const refresh = React.useCallback(async (): Promise<ICandidates | null> => {
    if (!notebook || busy()) {
      return null;
    }
    try {
      await notebook.sessionContext.ready;
      const kernel = notebook.sessionContext.session?.kernel;
      if (!kernel || kernel.status === 'dead') {
        checkReady(kernel, 'Refresh'); // throws the no-kernel sentence
      }
      setListing(true);
      const found = await listCandidates(kernel!);
      setCandidates(found);
      setError(null);
      return found;
    } catch (reason) {
      setCandidates(null);
      setError((reason as Error).message);
      return null;
    } finally {
      setListing(false);
    }
  }, [notebook]);

  // A new notebook starts from nothing.
  React.useEffect(() => {
    setCandidates(null);
    setError(null);
  }, [notebook]);

  return { candidates, listing, error, refresh };
}
