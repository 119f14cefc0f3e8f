import { checkIcon, closeIcon, LabIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

export function StepIcon({ status }: { status: string }): JSX.Element {
  if (status === 'running') {
    return <span className="mlship-Spinner" aria-label="running" />;
  }
  // Anything but running or failed finished well ("done", or e.g. "reused" for a cached environment).
  const failed = status === 'failed';
  const icon: LabIcon = failed ? closeIcon : checkIcon;
  return (
    <icon.react tag="span" className={`mlship-StepIcon mlship-mod-${failed ? 'failed' : 'done'}`} aria-label={failed ? 'failed' : 'done'} />
  );
}
