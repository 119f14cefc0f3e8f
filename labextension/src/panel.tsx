/**
 * The Ship sidebar: pick a model and a sample of the notebook's kernel, review, export, build, push.
 *
 * The panel re-implements nothing: it runs the ship magic in the kernel (kernel.ts), the same text
 * "Insert as cell" writes (command.ts), and calls the server only through requestAPI (handler.ts) for
 * history, builds and the registry. This file binds the widget to a notebook and composes the parts:
 * the form (components/ShipForm), the run (components/RunView), the history (components/ExportHistory,
 * components/RegistryView); their state lives in hooks/.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { PathExt } from '@jupyterlab/coreutils';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Kernel } from '@jupyterlab/services';
import { ReactWidget } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { ISignal, Signal } from '@lumino/signaling';
import * as React from 'react';

import { defaultName, FormErrors, IShipForm, shipCommand, validate } from './command';
import { ExportHistory } from './components/ExportHistory';
import { PanelHeader } from './components/PanelHeader';
import { IPushOutcome } from './components/PushOutcome';
import { RegistryView } from './components/RegistryView';
import { RunView } from './components/RunView';
import { ShipForm } from './components/ShipForm';
import { EMPTY_FORM, withDefaults } from './defaults';
import { serverPath } from './format';
import { useCandidates } from './hooks/useCandidates';
import { useExportHistory } from './hooks/useExportHistory';
import { useImageBuild } from './hooks/useImageBuild';
import { useNow } from './hooks/useNow';
import { useRegistry } from './hooks/useRegistry';
import { useShipRun } from './hooks/useShipRun';
import { useSignal } from './hooks/useSignal';
import { shipIcon } from './icons';
import { checkReady, KernelNotReady } from './kernel';
import { showReview } from './reviewDocument';

export interface IShipPanelOptions {
  docManager: IDocumentManager;
  rendermime: IRenderMimeRegistry;
  shell: JupyterFrontEnd.IShell;
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
    return <ShipView panel={this} {...this.options} />;
  }

  private _notebook: NotebookPanel | null = null;
  private _notebookChanged = new Signal<this, NotebookPanel | null>(this);
  private _shown = new Signal<this, void>(this);
}

interface IShipViewProps extends IShipPanelOptions {
  panel: ShipPanel;
}

/** The form's values and which of its errors show (all after a submit; the name as it is typed). */
function useShipForm(notebookPath: string) {
  const [form, setForm] = React.useState<IShipForm>(EMPTY_FORM);
  const [nameTouched, setNameTouched] = React.useState(false);
  const [submitted, setSubmitted] = React.useState(false);
  React.useEffect(() => {
    setForm({ ...EMPTY_FORM, name: notebookPath ? defaultName(notebookPath) : '' });
    setNameTouched(false);
    setSubmitted(false);
  }, [notebookPath]);
  const errors: FormErrors = validate(form);
  const visibleErrors: FormErrors = submitted ? errors : nameTouched ? { name: errors.name } : {};
  const update = React.useCallback((changes: Partial<IShipForm>) => setForm(f => ({ ...f, ...changes })), []);
  return { form, setForm, errors, visibleErrors, submitted, setSubmitted, setNameTouched, update };
}

function ShipView({ panel, docManager, rendermime, shell }: IShipViewProps): JSX.Element {
  const notebook = panel.notebook;
  const notebookPath = notebook?.context.path ?? '';
  const sessionContext = notebook?.sessionContext ?? null;
  const kernel = (): Kernel.IKernelConnection | null => sessionContext?.session?.kernel ?? null;

  const shipForm = useShipForm(notebookPath);
  const { form, errors } = shipForm;
  const ship = useShipRun();
  const listing = useCandidates(notebook, () => !!ship.current.current?.running);
  const history = useExportHistory(notebookPath);
  const registry = useRegistry(notebookPath);
  const image = useImageBuild();
  const [kernelNotice, setKernelNotice] = React.useState<string | null>(null); // why the panel cannot act now

  const refresh = React.useCallback(async () => {
    const found = await listing.refresh();
    if (found) {
      shipForm.setForm(f => withDefaults(f, found));
    }
  }, [listing.refresh]);

  // A new notebook: its kernel's candidates; the run of another notebook is put away unless it still runs.
  React.useEffect(() => {
    setKernelNotice(notebook ? null : 'Open a notebook: the Ship panel works on the active notebook.');
    ship.clear();
    image.clear();
    void refresh();
  }, [notebook]);

  // Candidates change when the kernel does, and whenever a cell of this notebook has run.
  useSignal(panel.notebookChanged);
  useSignal(panel.shown, () => void refresh());
  useSignal(sessionContext?.kernelChanged, () => void refresh());
  useSignal(sessionContext?.statusChanged);
  const debounce = React.useRef<number | undefined>(undefined);
  useSignal(NotebookActions.executed, args => {
    if (args.notebook !== notebook?.content || !panel.isVisible) {
      return;
    }
    window.clearTimeout(debounce.current);
    debounce.current = window.setTimeout(() => void refresh(), 400);
  });

  const run = ship.run;
  const running = !!run?.running;
  const now = useNow(running || image.build?.status === 'running');
  const formOk = Object.keys(errors).length === 0;

  const start = async (kind: 'review' | 'export') => {
    if (!notebook) {
      return;
    }
    // The kernel first: with no kernel or a busy one, the form's lists are empty for that reason.
    let current: Kernel.IKernelConnection;
    try {
      current = checkReady(kernel(), kind === 'review' ? 'Review' : 'Export');
    } catch (error) {
      setKernelNotice((error as KernelNotReady).message);
      return;
    }
    setKernelNotice(null);
    shipForm.setSubmitted(true);
    if (!formOk) {
      return;
    }
    image.clear();
    const done = await ship.start(current, kind, notebookPath, shipCommand(form, { dryRun: kind === 'review', events: true }));
    if (kind === 'review' && done.review && done.result?.ok) {
      void showReview(shell, rendermime, done.review, notebook.id);
    }
    if (kind === 'export') {
      void history.refresh();
    }
  };

  const insertCell = () => {
    shipForm.setSubmitted(true);
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
  // Build and push take the project as the server knows it: relative to its root, else absolute.
  const serverProject = (project: string) => serverPath(project, run?.notebookPath ?? notebookPath) ?? project;
  // The outcome of the last Push, shown beside the button that started it (`from`: 'result' or a record's time).
  const [pushed, setPushed] = React.useState<IPushOutcome | null>(null);
  const push = async (project: string, from: string) => {
    setPushed(null);
    const outcome = await registry.push(serverProject(project));
    setPushed({ project, from, ok: outcome.value !== null, message: outcome.message });
  };
  const pushing = (project: string) => registry.pending === `push ${serverProject(project)}`;

  const notice = kernelNotice ?? listing.error;

  return (
    <div className="mlship-View">
      <PanelHeader
        notebookPath={notebook ? notebookPath : null}
        kernelStatus={sessionContext?.session?.kernel?.status ?? 'no kernel'}
        reading={listing.listing}
        canRefresh={!!notebook && !running}
        onRefresh={() => {
          void refresh();
          void history.refresh();
          void registry.refresh();
        }}
      />
      {notice && (
        <div className="mlship-Message mlship-mod-error" role="alert">
          {notice}
        </div>
      )}

      <ShipForm
        form={form}
        candidates={listing.candidates}
        errors={errors}
        visibleErrors={shipForm.visibleErrors}
        submitted={shipForm.submitted}
        running={running}
        cancelling={!!run?.cancelling}
        update={shipForm.update}
        onNameTyped={() => shipForm.setNameTouched(true)}
        onReview={() => void start('review')}
        onExport={() => void start('export')}
        onCancel={() => void ship.cancel(kernel())}
        onInsertCell={insertCell}
      />

      {run && (
        <RunView
          run={run}
          now={now}
          builders={image.builders}
          build={image.build}
          pushing={!!run.result?.project && pushing(run.result.project)}
          pushed={pushed?.from === 'result' ? pushed : null}
          onOpen={open}
          onOpenReview={() => run.review && void showReview(shell, rendermime, run.review, notebook?.id ?? null)}
          onBuild={project => void image.start(serverProject(project))}
          onCancelBuild={image.cancel}
          onPush={project => void push(project, 'result')}
        />
      )}

      <ExportHistory
        exports={history.exports}
        error={history.error}
        canOpen={record => !!serverPath(record.project, notebookPath)}
        pushing={record => pushing(record)}
        pushed={pushed}
        onOpenReview={record => open(record.project, 'REVIEW.md', 'Markdown Preview')}
        onPush={record => void push(record.project, `history:${record.time}`)}
      />
      <RegistryView registry={registry} />
    </div>
  );
}
