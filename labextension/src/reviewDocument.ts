/**
 * The review in a main-area tab, rendered as Markdown with the notebook's own renderer: a 250 px
 * sidebar cannot show its tables. One tab per service name, re-rendered by the next review.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Panel } from '@lumino/widgets';

import { shipIcon } from './icons';
import { IReviewEvent } from './kernel';

const open = new Map<string, MainAreaWidget<Panel>>();

export async function showReview(
  shell: JupyterFrontEnd.IShell,
  rendermime: IRenderMimeRegistry,
  review: IReviewEvent,
  beside: string | null // the notebook's widget id: the review opens to its right
): Promise<void> {
  const id = `mlship-review-${review.review.name}`;
  let widget = open.get(id);
  if (!widget || widget.isDisposed) {
    const content = new Panel();
    content.addClass('mlship-ReviewDocument');
    widget = new MainAreaWidget({ content });
    widget.id = id;
    widget.title.icon = shipIcon;
    widget.title.closable = true;
    open.set(id, widget);
    shell.add(widget, 'main', beside ? { mode: 'split-right', ref: beside } : undefined);
  }
  widget.title.label = `Review: ${review.review.name} ${review.review.version}`;
  widget.title.caption = 'What an export of this model contains (REVIEW.md)';
  const renderer = rendermime.createRenderer('text/markdown');
  await renderer.renderModel(rendermime.createModel({ data: { 'text/markdown': review.markdown } }));
  const content = widget.content;
  while (content.widgets.length) {
    content.widgets[0].dispose();
  }
  content.addWidget(renderer);
  shell.activateById(id);
}
