import { Kernel } from '@jupyterlab/services';
import * as React from 'react';

import { runShip } from '../kernel';
import { applyEvent, IRun, newRun } from '../run';

export interface IShipRun {
  run: IRun | null;
  /** The run in progress, readable from callbacks without waiting for a render. */
  current: React.MutableRefObject<IRun | null>;
  start: (kernel: Kernel.IKernelConnection, kind: IRun['kind'], notebookPath: string, command: string) => Promise<IRun>;
  cancel: (kernel: Kernel.IKernelConnection | null) => Promise<void>;
  clear: () => void;
}

/** Run the ship magic in the kernel and follow its events (docs/panel-protocol.md). */
export function useShipRun(): IShipRun {
  const [run, setRun] = React.useState<IRun | null>(null);
  const current = React.useRef<IRun | null>(null);
  current.current = run;

  const start = React.useCallback(
    async (kernel: Kernel.IKernelConnection, kind: IRun['kind'], notebookPath: string, command: string) => {
      let state = newRun(kind, notebookPath, command);
      current.current = state;
      setRun(state);
      const outcome = await runShip(kernel, command, event => {
        // Cancel may have been pressed since the last event: keep its state.
        state = applyEvent({ ...state, cancelling: current.current?.cancelling ?? false }, event);
        current.current = state;
        setRun(state);
      });
      let error = outcome.result ? null : outcome.error;
      if (outcome.interrupted && !outcome.result) {
        error = `Cancelled: the ${kind} was interrupted and nothing was exported.`;
      } else if (!outcome.result && !error) {
        error = 'The kernel finished without a result: is jupyter-mlship installed in this kernel?';
      }
      // A step still "running" when the run ended did not finish.
      const steps = state.steps.map(s => (s.status === 'running' ? { ...s, status: 'failed' as const } : s));
      const done: IRun = { ...state, steps, running: false, error, output: outcome.output, finishedAt: Date.now() };
      current.current = done;
      setRun(done);
      return done;
    },
    []
  );

  const cancel = React.useCallback(async (kernel: Kernel.IKernelConnection | null) => {
    const running = current.current;
    if (!kernel || !running?.running) {
      return;
    }
    const cancelling = { ...running, cancelling: true };
    current.current = cancelling;
    setRun(cancelling);
    await kernel.interrupt();
  }, []);

  const clear = React.useCallback(() => {
    if (!current.current?.running) {
      setRun(null);
    }
  }, []);

  return { run, current, start, cancel, clear };
}
