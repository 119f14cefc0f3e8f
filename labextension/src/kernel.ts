/**
 * The panel's two conversations with the notebook's kernel (docs/panel-protocol.md):
 * reading what it holds (user_expressions) and running the ship magic (execute + IOPub events).
 */
import { Kernel, KernelMessage } from '@jupyterlab/services';

export const EVENT_MIME = 'application/vnd.mlship.event+json';
const CANDIDATES_EXPRESSION = '__import__("jupyter_mlship.inspect", fromlist=["_"]).candidates()';
const JSON_MIME = 'application/json';

export interface IModelCandidate {
  name: string;
  type: string;
  module: string;
  methods: string[];
}

export interface IFunctionCandidate {
  name: string;
  signature: string;
  doc: string;
}

export interface ISampleCandidate {
  name: string;
  type: string;
  shape: number[];
  nbytes: number;
  detail: string;
}

export interface ICandidates {
  models: IModelCandidate[];
  functions: IFunctionCandidate[];
  samples: ISampleCandidate[];
}

export interface IStepEvent {
  event: 'step';
  step: string;
  status: 'running' | 'done' | 'failed';
  seconds: number | null;
  detail: string;
}

export interface IReviewEvent {
  event: 'review';
  review: { name: string; version: string; sections?: unknown[] };
  markdown: string;
}

export interface ILogEvent {
  event: 'log';
  line: string;
}

export interface IResultEvent {
  event: 'result';
  ok: boolean;
  name: string;
  version: string;
  project: string | null;
  verified: boolean;
  tests: { passed: number; failed: number; output: string } | null;
  message: string;
}

export type ShipEvent = IStepEvent | IReviewEvent | ILogEvent | IResultEvent;

/** How a run ended: the result event if the magic got that far, else the kernel's error. */
export interface IRunOutcome {
  result: IResultEvent | null;
  error: string | null; // one sentence, when no result event explains the failure
  interrupted: boolean;
  output: string; // what the magic printed (e.g. failing test output)
}

/** Thrown for conditions the user must fix first; `message` is the sentence to show. */
export class KernelNotReady extends Error {}

/** The error sentence of an IPython error message: UsageError carries the magic's own sentence. */
function errorSentence(content: { ename: string; evalue: string }): string {
  if (content.ename === 'UsageError') {
    return content.evalue;
  }
  if (content.ename === 'ModuleNotFoundError' && content.evalue.includes('jupyter_mlship')) {
    return "jupyter-mlship is not installed in this notebook's kernel: install it in the kernel's environment, then restart the kernel.";
  }
  return `${content.ename}: ${content.evalue}`;
}

export function checkReady(kernel: Kernel.IKernelConnection | null | undefined, forWhat: string): Kernel.IKernelConnection {
  if (!kernel || kernel.status === 'dead' || kernel.connectionStatus === 'disconnected') {
    throw new KernelNotReady(
      'This notebook has no running kernel: start one (Kernel ▸ Change Kernel…), run the cells that train the model, then try again.'
    );
  }
  if (kernel.status !== 'idle') {
    throw new KernelNotReady(
      `The kernel is ${kernel.status}: wait for the running cell to finish (or interrupt it), then press ${forWhat} again.`
    );
  }
  return kernel;
}

/** What the kernel holds that the form can offer. */
export async function listCandidates(kernel: Kernel.IKernelConnection): Promise<ICandidates> {
  const future = kernel.requestExecute(
    { code: '', silent: true, store_history: false, user_expressions: { candidates: CANDIDATES_EXPRESSION } },
    true
  );
  let reply: KernelMessage.IExecuteReplyMsg;
  try {
    reply = (await future.done) as KernelMessage.IExecuteReplyMsg;
  } catch {
    throw new KernelNotReady('The kernel stopped before it listed its models and samples (restarted or shut down).');
  }
  const content = reply.content as KernelMessage.IExecuteReply;
  const answer = (content.user_expressions || {})['candidates'] as any;
  if (!answer) {
    throw new Error('The kernel did not answer the listing of models and samples.');
  }
  if (answer.status !== 'ok') {
    throw new Error(errorSentence(answer));
  }
  // The kernel's display formatter sends the listing as an application/json bundle (docs/panel-protocol.md).
  const listing = answer.data?.[JSON_MIME] as ICandidates | undefined;
  if (!listing || !Array.isArray(listing.models) || !Array.isArray(listing.samples)) {
    throw new Error(
      "The kernel's jupyter-mlship answered the listing in an older form: upgrade it in the kernel's environment, then restart the kernel."
    );
  }
  return { models: listing.models, functions: listing.functions ?? [], samples: listing.samples };
}

/** Load the magics without a trace in the notebook (the user may not have run %load_ext). */
async function loadExtension(kernel: Kernel.IKernelConnection): Promise<void> {
  const future = kernel.requestExecute(
    {
      code: 'get_ipython().extension_manager.load_extension("jupyter_mlship")',
      silent: true,
      store_history: false
    },
    true
  );
  await future.done;
}

/** Run a ship magic; `onEvent` sees each event as the kernel displays it. */
export async function runShip(
  kernel: Kernel.IKernelConnection,
  code: string,
  onEvent: (event: ShipEvent) => void
): Promise<IRunOutcome> {
  await loadExtension(kernel);
  const outcome: IRunOutcome = { result: null, error: null, interrupted: false, output: '' };
  const future = kernel.requestExecute(
    { code, silent: false, store_history: false, allow_stdin: false, stop_on_error: true },
    true
  );
  future.onIOPub = (msg: KernelMessage.IIOPubMessage) => {
    if (
      KernelMessage.isDisplayDataMsg(msg) ||
      KernelMessage.isUpdateDisplayDataMsg(msg) ||
      KernelMessage.isExecuteResultMsg(msg)
    ) {
      const event = msg.content.data[EVENT_MIME] as unknown as ShipEvent | undefined;
      if (event && typeof event === 'object' && 'event' in event) {
        if (event.event === 'result') {
          outcome.result = event;
        }
        onEvent(event);
      }
    } else if (KernelMessage.isStreamMsg(msg)) {
      // Keep the tail only: verify can print thousands of lines.
      outcome.output = (outcome.output + msg.content.text).slice(-20000);
    } else if (KernelMessage.isErrorMsg(msg)) {
      if (msg.content.ename === 'KeyboardInterrupt') {
        outcome.interrupted = true;
      } else {
        outcome.error = errorSentence(msg.content);
      }
    }
  };
  try {
    const reply = (await future.done) as KernelMessage.IExecuteReplyMsg;
    const content = reply.content;
    // A magic's UsageError reaches IOPub only as stderr text; the reply carries its name and sentence.
    if (content.status === 'error') {
      if (content.ename === 'KeyboardInterrupt') {
        outcome.interrupted = true;
      } else if (!outcome.error) {
        outcome.error = errorSentence(content);
      }
    } else if (content.status === 'aborted') {
      outcome.interrupted = true;
    }
  } catch {
    // The future is disposed when the kernel restarts or dies mid-run.
    outcome.error = outcome.error ?? 'The kernel stopped before the export finished (restarted or died).';
  }
  return outcome;
}
