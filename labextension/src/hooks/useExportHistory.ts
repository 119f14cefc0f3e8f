import * as React from 'react';

import { IExportRecord, listExports } from '../handler';

export interface IExportHistory {
  exports: IExportRecord[];
  error: string | null;
  refresh: () => Promise<void>;
}

/** Earlier exports of this notebook (GET /mlship/history). */
export function useExportHistory(notebookPath: string): IExportHistory {
  const [exports, setExports] = React.useState<IExportRecord[]>([]);
  const [error, setError] = React.useState<string | null>(null);
  const refresh = React.useCallback(async () => {
    if (!notebookPath) {
      setExports([]);
      return;
    }
    try {
      setExports((await listExports(notebookPath)).exports);
      setError(null);
    } catch (reason) {
      setError((reason as Error).message);
    }
  }, [notebookPath]);
  React.useEffect(() => {
    void refresh();
  }, [refresh]);
  return { exports, error, refresh };
}
