/** The panel's title, its Refresh button, and which notebook and kernel it works on. */
import { PathExt } from '@jupyterlab/coreutils';
import { refreshIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { shipIcon } from '../icons';

export function PanelHeader(props: {
  notebookPath: string | null; // null: no notebook open
  kernelStatus: string;
  reading: boolean; // the kernel's listing is being read
  canRefresh: boolean;
  onRefresh: () => void;
}): JSX.Element {
  const { notebookPath, kernelStatus } = props;
  return (
    <>
      <header className="mlship-Header">
        <h2 className="mlship-Title">
          <shipIcon.react tag="span" className="mlship-TitleIcon" />
          Ship
        </h2>
        <button
          type="button"
          className="jp-ToolbarButtonComponent jp-mod-minimal jp-Button mlship-IconButton"
          onClick={props.onRefresh}
          disabled={!props.canRefresh}
          title="Read the kernel's models and samples, the history and the registry again"
          aria-label="Refresh models and samples"
        >
          <refreshIcon.react tag="span" />
        </button>
      </header>
      <p className="mlship-Context">
        {notebookPath !== null ? (
          <>
            <span className="mlship-NotebookName" title={notebookPath}>
              {PathExt.basename(notebookPath)}
            </span>
            {' · kernel '}
            <span className={`mlship-KernelStatus mlship-mod-${kernelStatus.replace(/\s/g, '-')}`}>{kernelStatus}</span>
            {props.reading ? ' · reading the kernel…' : ''}
          </>
        ) : (
          'No notebook'
        )}
      </p>
    </>
  );
}
