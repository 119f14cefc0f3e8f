import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, ToolbarButton } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { IDocumentManager } from '@jupyterlab/docmanager';
import { INotebookModel, INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';

import { shipIcon } from './icons';
import { ShipPanel } from './panel';

const OPEN_COMMAND = 'mlship:open';

/** The notebook toolbar's Ship button: opens the panel on that notebook. */
class ShipButton implements DocumentRegistry.IWidgetExtension<NotebookPanel, INotebookModel> {
  constructor(private openPanel: (notebook: NotebookPanel) => void) {}

  createNew(notebook: NotebookPanel): IDisposable {
    const button = new ToolbarButton({
      className: 'mlship-ToolbarButton',
      icon: shipIcon,
      label: 'Ship',
      tooltip: 'Ship a model of this notebook as a tested service',
      onClick: () => this.openPanel(notebook)
    });
    // Next to the cell type selector when the toolbar has one (it is configurable), else near the start.
    if (!notebook.toolbar.insertAfter('cellType', 'mlship-ship', button)) {
      notebook.toolbar.insertItem(10, 'mlship-ship', button);
    }
    return new DisposableDelegate(() => button.dispose());
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-mlship:plugin',
  description: 'Ship a model from the notebook as a tested FastAPI service.',
  autoStart: true,
  requires: [INotebookTracker, IDocumentManager, IRenderMimeRegistry],
  optional: [ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    docManager: IDocumentManager,
    rendermime: IRenderMimeRegistry,
    palette: ICommandPalette | null
  ) => {
    const panel = new ShipPanel({ docManager, rendermime, shell: app.shell });
    app.shell.add(panel, 'left', { rank: 900 });

    // The panel follows the active notebook; a toolbar button pins it to its own notebook.
    panel.setNotebook(tracker.currentWidget);
    tracker.currentChanged.connect((_, notebook) => {
      if (notebook) {
        panel.setNotebook(notebook);
      }
    });
    tracker.widgetAdded.connect((_, notebook) => {
      notebook.disposed.connect(() => {
        if (panel.notebook === notebook) {
          panel.setNotebook(tracker.currentWidget);
        }
      });
    });

    const openPanel = (notebook: NotebookPanel | null) => {
      if (notebook) {
        panel.setNotebook(notebook);
      }
      app.shell.activateById(panel.id);
    };
    app.commands.addCommand(OPEN_COMMAND, {
      label: 'Ship a Model as a Service…',
      caption: 'Open the Ship panel for the active notebook',
      icon: shipIcon,
      execute: () => openPanel(tracker.currentWidget)
    });
    palette?.addItem({ command: OPEN_COMMAND, category: 'Notebook Operations' });
    app.docRegistry.addWidgetExtension('Notebook', new ShipButton(openPanel));
  }
};

export default plugin;
