import * as React from 'react';

import { cancelBuild, getBuilders, IBuilders, IBuildState, pollBuild, startBuild } from '../handler';
import { MAX_LOG_LINES } from '../run';

const POLL_MS = 1000;

export type BuildView = IBuildState & { error?: string };

export interface IImageBuild {
  builders: IBuilders | null;
  build: BuildView | null;
  start: (project: string) => Promise<void>;
  cancel: () => void;
  clear: () => void;
}

/** The container builders this server has, and one image build streamed from it (/mlship/build). */
export function useImageBuild(): IImageBuild {
  const [builders, setBuilders] = React.useState<IBuilders | null>(null);
  const [build, setBuild] = React.useState<BuildView | null>(null);

  React.useEffect(() => {
    getBuilders()
      .then(setBuilders)
      .catch(error => setBuilders({ available: false, builder: null, reason: (error as Error).message }));
  }, []);

  const start = React.useCallback(async (project: string) => {
    try {
      let state: IBuildState = await startBuild(project);
      setBuild(state);
      let lines = state.lines;
      while (state.status === 'running') {
        await new Promise(resolve => window.setTimeout(resolve, POLL_MS));
        state = await pollBuild(state.id, state.next);
        lines = [...lines, ...state.lines].slice(-MAX_LOG_LINES);
        setBuild({ ...state, lines });
      }
    } catch (error) {
      setBuild(b => ({
        ...(b ?? { id: '', project, returncode: null, lines: [], next: 0 }),
        status: 'failed',
        error: (error as Error).message
      }));
    }
  }, []);

  const cancel = React.useCallback(() => {
    if (build?.id) {
      void cancelBuild(build.id).catch(() => undefined);
    }
  }, [build?.id]);

  const clear = React.useCallback(() => setBuild(b => (b?.status === 'running' ? b : null)), []);

  return { builders, build, start, cancel, clear };
}
