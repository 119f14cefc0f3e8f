/** One run of the ship magic as the panel shows it, built up from the magic's events. */
import { IResultEvent, IReviewEvent, IStepEvent, ShipEvent } from './kernel';

export const MAX_LOG_LINES = 400;

export interface IStepState extends IStepEvent {
  startedAt: number;
}

export interface IRun {
  kind: 'review' | 'export';
  notebookPath: string;
  command: string;
  startedAt: number;
  running: boolean;
  cancelling: boolean;
  steps: IStepState[];
  logs: string[];
  review: IReviewEvent | null;
  result: IResultEvent | null;
  error: string | null;
  output: string;
  finishedAt: number | null;
}

export function newRun(kind: IRun['kind'], notebookPath: string, command: string): IRun {
  return {
    kind,
    notebookPath,
    command,
    startedAt: Date.now(),
    running: true,
    cancelling: false,
    steps: [],
    logs: [],
    review: null,
    result: null,
    error: null,
    output: '',
    finishedAt: null
  };
}

export function applyEvent(run: IRun, event: ShipEvent): IRun {
  switch (event.event) {
    case 'step': {
      const steps = [...run.steps];
      const index = steps.findIndex(s => s.step === event.step);
      const startedAt = index >= 0 ? steps[index].startedAt : Date.now();
      const state = { ...event, startedAt };
      if (index >= 0) {
        steps[index] = state;
      } else {
        steps.push(state);
      }
      return { ...run, steps };
    }
    case 'log':
      return { ...run, logs: [...run.logs, event.line].slice(-MAX_LOG_LINES) };
    case 'review':
      return { ...run, review: event };
    case 'result':
      return { ...run, result: event };
  }
  return run;
}

/** The one sentence shown for a failed run (a failed step's detail is not repeated). */
export function runFailure(run: IRun): string | null {
  return run.result && !run.result.ok ? run.result.message : run.error;
}
