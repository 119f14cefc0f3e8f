/**
 * The Ship sidebar: pick a model and a sample of the notebook's kernel, review, export, build.
 *
 * The panel re-implements nothing: it runs the ship magic in the kernel (kernel.ts), the same text
 * "Insert as cell" writes (command.ts), and calls the server only for history and builds (handler.ts).
 */
import { PageConfig, PathExt } from '@jupyterlab/coreutils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Kernel } from '@jupyterlab/services';
import {
  buildIcon,
  checkIcon,
  closeIcon,
  LabIcon,
  ReactWidget,
  refreshIcon,
  runIcon,
  stopIcon
} from '@jupyterlab/ui-components';
import { ISignal, Signal } from '@lumino/signaling';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import {
  defaultName,
  FormErrors,
  IShipForm,
  nameError,
  shipCommand,
  validate
} from './command';
import {
  cancelBuild,
  getBuilders,
  IBuilders,
  IBuildState,
  IExportRecord,
  listExports,
  pollBuild,
  startBuild
} from './handler';
import { shipIcon } from './icons';
import {
  checkReady,
  ICandidates,
  IResultEvent,
  IReviewEvent,
  IStepEvent,
  KernelNotReady,
  listCandidates,
  runShip,
  ShipEvent
} from './kernel';

const POLL_MS = 1000;
const MAX_LOG_LINES = 400;

export interface IShipPanelOptions {
  docManager: IDocumentManager;
  rendermime: IRenderMimeRegistry;
}

/** The sidebar widget: a React view bound to one notebook at a time. */
export class ShipPanel extends ReactWidget {
  constructor(private options: IShipPanelOptions) {
    super();
    this.id = 'mlship-panel';
    this.title.icon = shipIcon;
    this.title.caption = 'Ship: export a model as a tested service';
    this.addClass('mlship-Panel');
  }

  get notebook(): NotebookPanel | null {
    return this._notebook;
  }

  /** Follow a notebook (the current one, or the one whose Ship button was pressed). */
  setNotebook(notebook: NotebookPanel | null): void {
    if (notebook === this._notebook) {
      return;
    }
    this._notebook = notebook;
    this._notebookChanged.emit(notebook);
  }

  get notebookChanged(): ISignal<this, NotebookPanel | null> {
    return this._notebookChanged;
  }

  get shown(): ISignal<this, void> {
    return this._shown;
  }

  protected onAfterShow(msg: Message): void {
    super.onAfterShow(msg);
    this._shown.emit();
  }

  render(): JSX.Element {
    return <ShipView panel={this} docManager={this.options.docManager} rendermime={this.options.rendermime} />;
  }

  private _notebook: NotebookPanel | null = null;
  private _notebookChanged = new Signal<this, NotebookPanel | null>(this);
  private _shown = new Signal<this, void>(this);
}

// ---- small hooks -------------------------------------------------------------------------------

/** Re-render on a Lumino signal; `slot` also runs if given. */
function useSignal<T, U>(signal: ISignal<T, U> | null | undefined, slot?: (args: U) => void): number {
  const [count, setCount] = React.useState(0);
  const latest = React.useRef(slot);
  latest.current = slot;
  React.useEffect(() => {
    if (!signal) {
      return;
    }
    const handler = (_: T, args: U) => {
      setCount(c => c + 1);
      latest.current?.(args);
    };
    signal.connect(handler);
    return () => {
      signal.disconnect(handler);
    };
  }, [signal]);
  return count;
}

/** The current time, every second while `active`: elapsed times move so nothing looks hung. */
function useNow(active: boolean): number {
  const [now, setNow] = React.useState(Date.now());
  React.useEffect(() => {
    if (!active) {
      return;
    }
    setNow(Date.now());
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, [active]);
  return active ? now : Date.now();
}

// ---- formatting --------------------------------------------------------------------------------

function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

function formatSeconds(seconds: number): string {
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

function formatTime(epochSeconds: number): string {
  return new Date(epochSeconds * 1000).toLocaleString();
}

const STEP_LABELS: Record<string, string> = {
  capture: 'Capture the model and its code',
  render: 'Write the service project',
  verify: 'Verify in a clean environment',
  build: 'Build the container image'
};

function stepLabel(step: string): string {
  const sub = step.split(':');
  if (sub.length > 1) {
    return sub.slice(1).join(':').replace(/[-_]/g, ' ');
  }
  return STEP_LABELS[step] ?? step;
}

/**
 * A project path as the server's contents API knows it (relative to the server root), or null
 * when the project lies outside the root. Relative paths are relative to the kernel's folder,
 * which is the notebook's folder.
 */
export function serverPath(project: string, notebookPath: string): string | null {
  const path = project.replace(/\\/g, '/');
  if (!path.startsWith('/') && !/^[A-Za-z]:\//.test(path)) {
    return PathExt.join(PathExt.dirname(notebookPath), path);
  }
  const root = PageConfig.getOption('serverRoot').replace(/\\/g, '/').replace(/\/+$/, '');
  if (root && path.startsWith(root + '/')) {
    return path.slice(root.length + 1);
  }
  return root === '' || root === '/' ? path.replace(/^\/+/, '') : null;
}

// ---- the run of a magic ------------------------------------------------------------------------

interface IStepState extends IStepEvent {
  startedAt: number;
}

interface IRun {
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

function applyEvent(run: IRun, event: ShipEvent): IRun {
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

// ---- the view ----------------------------------------------------------------------------------

interface IShipViewProps {
  panel: ShipPanel;
  docManager: IDocumentManager;
  rendermime: IRenderMimeRegistry;
}

const EMPTY_FORM: IShipForm = {
  name: '',
  target: 'model',
  model: '',
  method: 'predict',
  entry: '',
  sample: '',
  rows: '',
  sampleType: '',
  version: '1',
  out: 'services',
  verify: true
};

function ShipView({ panel, docManager, rendermime }: IShipViewProps): JSX.Element {
  const notebook = panel.notebook;
  const notebookPath = notebook?.context.path ?? '';
  const sessionContext = notebook?.sessionContext ?? null;

  const [form, setForm] = React.useState<IShipForm>(EMPTY_FORM);
  const [nameTouched, setNameTouched] = React.useState(false);
  const [showErrors, setShowErrors] = React.useState(false);
  const [candidates, setCandidates] = React.useState<ICandidates | null>(null);
  const [listing, setListing] = React.useState(false);
  const [notice, setNotice] = React.useState<string | null>(null); // why the panel cannot act now
  const [run, setRun] = React.useState<IRun | null>(null);
  const [history, setHistory] = React.useState<IExportRecord[]>([]);
  const [historyError, setHistoryError] = React.useState<string | null>(null);
  const [builders, setBuilders] = React.useState<IBuilders | null>(null);
  const [build, setBuild] = React.useState<(IBuildState & { error?: string }) | null>(null);
  const runRef = React.useRef<IRun | null>(null);
  runRef.current = run;

  const kernel = (): Kernel.IKernelConnection | null => sessionContext?.session?.kernel ?? null;

  const refreshCandidates = React.useCallback(async () => {
    if (!notebook || runRef.current?.running) {
      return;
    }
    try {
      await notebook.sessionContext.ready;
      const current = notebook.sessionContext.session?.kernel;
      if (!current || current.status === 'dead') {
        checkReady(current, 'Refresh'); // throws the no-kernel sentence
      }
      setListing(true);
      const found = await listCandidates(current!);
      setCandidates(found);
      setNotice(null);
      setForm(f => withDefaults(f, found));
    } catch (error) {
      setCandidates(null);
      setNotice((error as Error).message);
    } finally {
      setListing(false);
    }
  }, [notebook]);

  const refreshHistory = React.useCallback(async () => {
    if (!notebookPath) {
      setHistory([]);
      return;
    }
    try {
      setHistory((await listExports(notebookPath)).exports);
      setHistoryError(null);
    } catch (error) {
      setHistoryError((error as Error).message);
    }
  }, [notebookPath]);

  // A new notebook: a fresh form named after it, its kernel's candidates and its history.
  React.useEffect(() => {
    setForm({ ...EMPTY_FORM, name: notebookPath ? defaultName(notebookPath) : '' });
    setNameTouched(false);
    setShowErrors(false);
    setCandidates(null);
    setNotice(notebook ? null : 'Open a notebook: the Ship panel works on the active notebook.');
    if (!runRef.current?.running) {
      setRun(null);
      setBuild(null);
    }
    void refreshCandidates();
    void refreshHistory();
  }, [notebook]);

  React.useEffect(() => {
    getBuilders()
      .then(setBuilders)
      .catch(error => setBuilders({ available: false, builder: null, reason: (error as Error).message }));
  }, []);

  // Candidates change when the kernel does, and whenever a cell of this notebook has run.
  useSignal(panel.notebookChanged);
  useSignal(panel.shown, () => void refreshCandidates());
  useSignal(sessionContext?.kernelChanged, () => void refreshCandidates());
  useSignal(sessionContext?.statusChanged);
  const debounce = React.useRef<number | undefined>(undefined);
  useSignal(NotebookActions.executed, args => {
    if (args.notebook !== notebook?.content || !panel.isVisible) {
      return;
    }
    window.clearTimeout(debounce.current);
    debounce.current = window.setTimeout(() => void refreshCandidates(), 400);
  });

  const now = useNow(!!run?.running || build?.status === 'running');

  // ---- actions ----

  const errors: FormErrors = validate(form);
  const visibleErrors: FormErrors = showErrors ? errors : nameTouched ? { name: errors.name } : {};
  const formOk = Object.keys(errors).length === 0;

  const update = (changes: Partial<IShipForm>) => setForm(f => ({ ...f, ...changes }));

  const start = async (kind: 'review' | 'export') => {
    if (!notebook) {
      return;
    }
    // The kernel first: with no kernel or a busy one, the form's lists are empty for that reason.
    let current: Kernel.IKernelConnection;
    try {
      current = checkReady(kernel(), kind === 'review' ? 'Review' : 'Export');
    } catch (error) {
      setNotice((error as KernelNotReady).message);
      return;
    }
    setNotice(null);
    setShowErrors(true);
    if (!formOk) {
      return;
    }
    const command = shipCommand(form, { dryRun: kind === 'review', events: true });
    let state: IRun = {
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
    setRun(state);
    setBuild(null);
    const outcome = await runShip(current, command, event => {
      state = applyEvent(state, event);
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
    setRun({ ...state, steps, running: false, error, output: outcome.output, finishedAt: Date.now() });
    if (kind === 'export') {
      void refreshHistory();
    }
  };

  const cancel = async () => {
    const current = kernel();
    if (!current || !run?.running) {
      return;
    }
    setRun({ ...run, cancelling: true });
    await current.interrupt();
  };

  const insertCell = () => {
    setShowErrors(true);
    if (!formOk || !notebook) {
      return;
    }
    const content = notebook.content;
    const index = content.activeCellIndex + 1;
    content.model?.sharedModel.insertCell(index, { cell_type: 'code', source: shipCommand(form) });
    content.activeCellIndex = index;
    content.scrollToItem(index).catch(() => undefined);
  };

  const open = (project: string, file: string, factory?: string) => {
    const path = serverPath(project, run?.notebookPath ?? notebookPath);
    if (path) {
      docManager.openOrReveal(PathExt.join(path, file), factory);
    }
  };

  const startImageBuild = async (project: string) => {
    const path = serverPath(project, run?.notebookPath ?? notebookPath) ?? project;
    try {
      let state: IBuildState = await startBuild(path);
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
        ...(b ?? { id: '', project: path, returncode: null, lines: [], next: 0 }),
        status: 'failed',
        error: (error as Error).message
      }));
    }
  };

  // ---- render ----

  const status = sessionContext?.session?.kernel?.status ?? 'no kernel';
  const running = !!run?.running;

  return (
    <div className="mlship-View">
      <header className="mlship-Header">
        <h2 className="mlship-Title">
          <shipIcon.react tag="span" className="mlship-TitleIcon" />
          Ship
        </h2>
        <button
          type="button"
          className="jp-ToolbarButtonComponent jp-mod-minimal jp-Button mlship-IconButton"
          onClick={() => {
            void refreshCandidates();
            void refreshHistory();
          }}
          disabled={!notebook || running}
          title="Read the kernel's models and samples again"
          aria-label="Refresh models and samples"
        >
          <refreshIcon.react tag="span" />
        </button>
      </header>
      <p className="mlship-Context">
        {notebook ? (
          <>
            <span className="mlship-NotebookName" title={notebookPath}>
              {PathExt.basename(notebookPath)}
            </span>
            {' · kernel '}
            <span className={`mlship-KernelStatus mlship-mod-${status.replace(/\s/g, '-')}`}>{status}</span>
            {listing ? ' · reading the kernel…' : ''}
          </>
        ) : (
          'No notebook'
        )}
      </p>

      {notice && (
        <div className="mlship-Message mlship-mod-error" role="alert">
          {notice}
        </div>
      )}

      <form
        className="mlship-Form"
        onSubmit={event => {
          event.preventDefault();
          void start('export');
        }}
        aria-label="Ship form"
      >
        <Field id="mlship-name" label="Name" error={visibleErrors.name} hint="The service's folder and image name.">
          <input
            id="mlship-name"
            className="jp-mod-styled mlship-Input"
            value={form.name}
            spellCheck={false}
            autoComplete="off"
            aria-invalid={!!nameError(form.name)}
            onChange={event => {
              setNameTouched(true);
              update({ name: event.target.value });
            }}
          />
        </Field>

        <fieldset className="mlship-Fieldset">
          <legend className="mlship-Label">Serve</legend>
          <label className="mlship-Radio">
            <input
              type="radio"
              name="mlship-target"
              checked={form.target === 'model'}
              onChange={() => update({ target: 'model' })}
            />
            a model's method
          </label>
          <label className="mlship-Radio">
            <input
              type="radio"
              name="mlship-target"
              checked={form.target === 'entry'}
              onChange={() => update({ target: 'entry' })}
            />
            an entry function
          </label>
        </fieldset>

        {form.target === 'model' ? (
          <>
            <SelectField
              id="mlship-model"
              label="Model"
              error={visibleErrors.model}
              value={form.model}
              empty={candidates?.models.length ? 'Choose a model…' : 'None found'}
              options={(candidates?.models ?? []).map(m => [m.name, `${m.name} — ${m.type}`])}
              onChange={value => {
                const model = candidates?.models.find(m => m.name === value);
                update({ model: value, method: model?.methods[0] ?? 'predict' });
              }}
            />
            <SelectField
              id="mlship-method"
              label="Method"
              error={visibleErrors.method}
              value={form.method}
              options={(candidates?.models.find(m => m.name === form.model)?.methods ?? ['predict']).map(m => [m, m])}
              onChange={value => update({ method: value })}
            />
          </>
        ) : (
          <SelectField
            id="mlship-entry"
            label="Entry function"
            error={visibleErrors.entry}
            hint="A function defined in this notebook; the service calls it with the request instances."
            value={form.entry}
            empty={candidates?.functions.length ? 'Choose a function…' : 'None defined in this notebook'}
            options={(candidates?.functions ?? []).map(f => [f.name, `${f.name}${f.signature}`])}
            onChange={value => update({ entry: value })}
          />
        )}

        <div className="mlship-Row">
          <SelectField
            id="mlship-sample"
            label="Sample"
            error={visibleErrors.sample}
            hint="Fixes the request schema and becomes the golden test."
            value={form.sample}
            empty={candidates?.samples.length ? 'Choose a sample…' : 'None found'}
            options={(candidates?.samples ?? []).map(s => [
              s.name,
              `${s.name} — ${s.type} ${s.shape.join('×')}, ${formatBytes(s.nbytes)}`
            ])}
            onChange={value => {
              const sample = candidates?.samples.find(s => s.name === value);
              update({ sample: value, sampleType: sample?.type ?? '', rows: sample && sample.shape[0] > 20 ? '20' : '' });
            }}
          />
          <Field id="mlship-rows" label="Rows" error={visibleErrors.rows} narrow>
            <input
              id="mlship-rows"
              className="jp-mod-styled mlship-Input"
              inputMode="numeric"
              placeholder="all"
              value={form.rows}
              onChange={event => update({ rows: event.target.value.trim() })}
            />
          </Field>
        </div>

        <div className="mlship-Row">
          <Field id="mlship-version" label="Version" error={visibleErrors.version} narrow>
            <input
              id="mlship-version"
              className="jp-mod-styled mlship-Input"
              value={form.version}
              spellCheck={false}
              onChange={event => update({ version: event.target.value })}
            />
          </Field>
          <Field
            id="mlship-out"
            label="Output folder"
            error={visibleErrors.out}
            hint="Relative to the notebook's folder."
          >
            <input
              id="mlship-out"
              className="jp-mod-styled mlship-Input"
              value={form.out}
              spellCheck={false}
              placeholder="services"
              onChange={event => update({ out: event.target.value })}
            />
          </Field>
        </div>

        <label className="mlship-Checkbox">
          <input type="checkbox" checked={form.verify} onChange={event => update({ verify: event.target.checked })} />
          Verify: run the project's tests in a clean environment
        </label>

        {form.sample && (form.model || form.entry) && !errors.name && (
          <pre className="mlship-Command" aria-label="Magic the panel runs">
            {shipCommand(form)}
          </pre>
        )}

        <div className="mlship-Actions">
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-reject"
            disabled={running}
            onClick={() => void start('review')}
            title="Show what would be exported (a dry run: nothing is written)"
          >
            Review
          </button>
          <button
            type="submit"
            className="jp-Button jp-mod-styled jp-mod-accept"
            disabled={running}
            title="Export the service project and verify it"
          >
            <runIcon.react tag="span" className="mlship-ButtonIcon" />
            Export
          </button>
          {running ? (
            <button
              type="button"
              className="jp-Button jp-mod-styled jp-mod-warn"
              onClick={() => void cancel()}
              disabled={run?.cancelling}
              title="Interrupt the kernel"
            >
              <stopIcon.react tag="span" className="mlship-ButtonIcon" />
              {run?.cancelling ? 'Cancelling…' : 'Cancel'}
            </button>
          ) : (
            <button
              type="button"
              className="jp-Button jp-mod-styled jp-mod-reject"
              onClick={insertCell}
              title="Write this %ship cell below the active cell, so a headless `mlship export` gives the same project"
            >
              Insert as cell
            </button>
          )}
        </div>
        {showErrors && !formOk && (
          <div className="mlship-Message mlship-mod-error" role="alert">
            Fix the fields marked above first.
          </div>
        )}
      </form>

      {run && (
        <RunView
          run={run}
          now={now}
          rendermime={rendermime}
          builders={builders}
          build={build}
          onOpen={open}
          onBuild={project => void startImageBuild(project)}
          onCancelBuild={id => void cancelBuild(id).catch(() => undefined)}
        />
      )}

      <section className="mlship-Section" aria-label="Earlier exports">
        <h3 className="mlship-SectionTitle">Earlier exports of this notebook</h3>
        {historyError && <div className="mlship-Message mlship-mod-error">{historyError}</div>}
        {history.length === 0 && !historyError ? (
          <p className="mlship-Muted">None yet.</p>
        ) : (
          <ul className="mlship-History">
            {history.map(record => (
              <li key={`${record.project}-${record.time}`} className="mlship-HistoryItem">
                <span className="mlship-HistoryName">
                  {record.name} <span className="mlship-Muted">v{record.version}</span>
                </span>
                <span className={`mlship-Badge ${record.ok && record.verified ? 'mlship-mod-ok' : 'mlship-mod-warn'}`}>
                  {!record.ok ? 'failed' : record.verified ? 'verified' : 'not verified'}
                </span>
                <span className="mlship-Muted mlship-HistoryTime">{formatTime(record.time)}</span>
                {record.ok && serverPath(record.project, notebookPath) && (
                  <button
                    type="button"
                    className="jp-Button jp-mod-styled jp-mod-reject mlship-Small"
                    onClick={() => open(record.project, 'REVIEW.md', 'Markdown Preview')}
                    title={record.project}
                    aria-label={`Open REVIEW.md of ${record.name} v${record.version}`}
                  >
                    Open review
                  </button>
                )}
              </li>
            ))}
          </ul>
        )}
      </section>
    </div>
  );
}

function withDefaults(form: IShipForm, found: ICandidates): IShipForm {
  const next = { ...form };
  if (!found.models.some(m => m.name === next.model)) {
    next.model = found.models[0]?.name ?? '';
    next.method = found.models[0]?.methods[0] ?? 'predict';
  }
  if (!found.functions.some(f => f.name === next.entry)) {
    next.entry = found.functions[0]?.name ?? '';
  }
  const sample = found.samples.find(s => s.name === next.sample) ?? found.samples[0];
  if (sample && sample.name !== next.sample) {
    // Golden tests stay small: a big sample is cut to its first rows unless the user says otherwise.
    next.rows = sample.shape[0] > 20 ? '20' : '';
  }
  next.sample = sample?.name ?? '';
  next.sampleType = sample?.type ?? '';
  if (!found.models.length && found.functions.length) {
    next.target = 'entry';
  }
  return next;
}

// ---- pieces ------------------------------------------------------------------------------------

function Field(props: {
  id: string;
  label: string;
  error?: string;
  hint?: string;
  narrow?: boolean;
  children: React.ReactNode;
}): JSX.Element {
  return (
    <div className={`mlship-Field${props.narrow ? ' mlship-mod-narrow' : ''}`}>
      <label className="mlship-Label" htmlFor={props.id}>
        {props.label}
      </label>
      {props.children}
      {props.error ? (
        <div className="mlship-FieldError" id={`${props.id}-error`} role="alert">
          {props.error}
        </div>
      ) : (
        props.hint && <div className="mlship-Hint">{props.hint}</div>
      )}
    </div>
  );
}

/** A labelled select; `options` are [value, label] pairs, `empty` an optional first "nothing chosen" entry. */
function SelectField(props: {
  id: string;
  label: string;
  error?: string;
  hint?: string;
  value: string;
  empty?: string;
  options: [string, string][];
  onChange: (value: string) => void;
}): JSX.Element {
  return (
    <Field id={props.id} label={props.label} error={props.error} hint={props.hint}>
      <select
        id={props.id}
        className="jp-mod-styled mlship-Select"
        value={props.value}
        onChange={event => props.onChange(event.target.value)}
      >
        {props.empty !== undefined && <option value="">{props.empty}</option>}
        {props.options.map(([value, label]) => (
          <option key={value} value={value}>
            {label}
          </option>
        ))}
      </select>
    </Field>
  );
}

function StepIcon({ status }: { status: string }): JSX.Element {
  if (status === 'running') {
    return <span className="mlship-Spinner" aria-label="running" />;
  }
  // Anything but running or failed finished well ("done", or e.g. "reused" for a cached environment).
  const icon: LabIcon = status === 'failed' ? closeIcon : checkIcon;
  status = status === 'failed' ? 'failed' : 'done';
  return <icon.react tag="span" className={`mlship-StepIcon mlship-mod-${status}`} aria-label={status} />;
}

function Markdown({ source, rendermime }: { source: string; rendermime: IRenderMimeRegistry }): JSX.Element {
  const host = React.useRef<HTMLDivElement>(null);
  React.useEffect(() => {
    const renderer = rendermime.createRenderer('text/markdown');
    const model = rendermime.createModel({ data: { 'text/markdown': source } });
    let live = true;
    void renderer.renderModel(model).then(() => {
      if (live && host.current) {
        host.current.replaceChildren(renderer.node);
      }
    });
    return () => {
      live = false;
      renderer.dispose();
    };
  }, [source, rendermime]);
  return <div ref={host} className="mlship-Markdown" />;
}

interface IRunViewProps {
  run: IRun;
  now: number;
  rendermime: IRenderMimeRegistry;
  builders: IBuilders | null;
  build: (IBuildState & { error?: string }) | null;
  onOpen: (project: string, file: string, factory?: string) => void;
  onBuild: (project: string) => void;
  onCancelBuild: (id: string) => void;
}

function RunView({ run, now, rendermime, builders, build, onOpen, onBuild, onCancelBuild }: IRunViewProps): JSX.Element {
  const elapsed = Math.max(0, (run.finishedAt ?? now) - run.startedAt) / 1000;
  const result = run.result;
  const title = run.kind === 'review' ? 'Review' : 'Export';
  const projectPath = result?.project ? serverPath(result.project, run.notebookPath) : null;
  // The one sentence shown for a failed run (a failed step's detail is not repeated).
  const failure = result && !result.ok ? result.message : run.error;
  const buildLog = React.useRef<HTMLPreElement>(null);
  React.useEffect(() => {
    buildLog.current?.scrollTo(0, buildLog.current.scrollHeight);
  }, [build?.lines.length]);

  return (
    <section className="mlship-Section mlship-Run" aria-label={`${title} progress`}>
      <h3 className="mlship-SectionTitle">
        {title}
        <span className="mlship-Muted mlship-Elapsed" role="timer">
          {run.running ? `running for ${Math.floor(elapsed)} s` : `took ${formatSeconds(elapsed)}`}
        </span>
      </h3>
      <ol className="mlship-Steps" aria-live="polite">
        {run.steps.length === 0 && run.running && (
          <li className="mlship-Step">
            <StepIcon status="running" /> Starting in the kernel…
          </li>
        )}
        {run.steps.map(step => (
          <li
            key={step.step}
            className={`mlship-Step mlship-mod-${step.status}${step.step.includes(':') ? ' mlship-mod-sub' : ''}`}
          >
            <StepIcon status={step.status} />
            <span className="mlship-StepLabel">
              {stepLabel(step.step)}
              {!['running', 'done', 'failed'].includes(step.status) && (
                <span className="mlship-Muted"> ({step.status})</span>
              )}
            </span>
            <span className="mlship-Muted mlship-StepTime">
              {step.status === 'running'
                ? `${Math.floor(Math.max(0, now - step.startedAt) / 1000)} s…`
                : step.seconds !== null
                  ? formatSeconds(step.seconds)
                  : ''}
            </span>
            {step.status === 'failed' && step.detail && step.detail !== failure && (
              <div className="mlship-StepDetail">{step.detail}</div>
            )}
          </li>
        ))}
      </ol>
      {run.logs.length > 0 && (
        <details className="mlship-Details" open={run.running && run.logs.length > 0}>
          <summary>Log ({run.logs.length} lines)</summary>
          <pre className="mlship-Log">{run.logs.slice(-80).join('\n')}</pre>
        </details>
      )}

      {result && result.ok && (
        <div className="mlship-Result mlship-mod-ok" role="status">
          <div className="mlship-ResultTitle">
            <checkIcon.react tag="span" className="mlship-StepIcon mlship-mod-done" />
            {run.kind === 'review' ? 'Review ready' : result.verified ? 'Exported and verified' : 'Exported (not verified)'}
          </div>
          {!result.project && <div className="mlship-ResultMessage">{result.message}</div>}
          {result.project && (
            <div className="mlship-ResultPath">
              <code title={result.project}>{projectPath ?? result.project}</code>
            </div>
          )}
          {result.tests && (
            <div className="mlship-Tests">
              Tests: <strong>{result.tests.passed} passed</strong>, {result.tests.failed} failed
            </div>
          )}
          {result.project && (
            <div className="mlship-Actions">
              <button
                type="button"
                className="jp-Button jp-mod-styled jp-mod-reject"
                disabled={!projectPath}
                title={projectPath ? 'Open the review of the exported project' : 'The project lies outside the folder JupyterLab serves'}
                onClick={() => onOpen(result.project!, 'REVIEW.md', 'Markdown Preview')}
              >
                Open REVIEW.md
              </button>
              <button
                type="button"
                className="jp-Button jp-mod-styled jp-mod-reject"
                disabled={!projectPath}
                title={projectPath ? "Open the service's FastAPI app" : 'The project lies outside the folder JupyterLab serves'}
                onClick={() => onOpen(result.project!, 'app/main.py')}
              >
                Open app/main.py
              </button>
              <button
                type="button"
                className="jp-Button jp-mod-styled jp-mod-accept"
                disabled={!builders?.available || build?.status === 'running'}
                title={builders?.available ? `Build the container image with ${builders.builder}` : builders?.reason}
                onClick={() => onBuild(result.project!)}
              >
                <buildIcon.react tag="span" className="mlship-ButtonIcon" />
                Build image
              </button>
            </div>
          )}
          {result.project && builders && !builders.available && (
            <div className="mlship-Hint">Build image is unavailable: {builders.reason}</div>
          )}
        </div>
      )}

      {failure && (
        <div className="mlship-Message mlship-mod-error" role="alert">
          {failure}
        </div>
      )}
      {!run.running && failure && run.output.trim() && (
        <details className="mlship-Details">
          <summary>Output</summary>
          <pre className="mlship-Log">{run.output.slice(-6000)}</pre>
        </details>
      )}
      {result?.tests && result.tests.output && (
        <details className="mlship-Details">
          <summary>Test output</summary>
          <pre className="mlship-Log">{result.tests.output}</pre>
        </details>
      )}

      {build && (
        <div className="mlship-Build" aria-live="polite">
          <div className="mlship-ResultTitle">
            <StepIcon status={build.status === 'running' ? 'running' : build.status === 'succeeded' ? 'done' : 'failed'} />
            Image build: {build.status}
            {build.status === 'running' && build.id && (
              <button
                type="button"
                className="jp-Button jp-mod-styled jp-mod-warn mlship-Small"
                onClick={() => onCancelBuild(build.id)}
              >
                Stop
              </button>
            )}
          </div>
          {build.error && (
            <div className="mlship-Message mlship-mod-error" role="alert">
              {build.error}
            </div>
          )}
          {build.lines.length > 0 && (
            <pre className="mlship-Log" ref={buildLog}>
              {build.lines.join('\n')}
            </pre>
          )}
        </div>
      )}

      {run.review && (
        <details className="mlship-Details mlship-Review" open={run.kind === 'review'}>
          <summary>Review: what will be exported</summary>
          <Markdown source={run.review.markdown} rendermime={rendermime} />
        </details>
      )}
    </section>
  );
}

