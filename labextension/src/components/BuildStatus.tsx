/** One container image build, its log following new lines. */
import * as React from 'react';

import { useFollow } from '../hooks/useFollow';
import { BuildView } from '../hooks/useImageBuild';
import { StepIcon } from './StepIcon';

export function BuildStatus({ build, onCancel }: { build: BuildView; onCancel: () => void }): JSX.Element {
  const log = useFollow<HTMLPreElement>(build.lines.length);
  const status = build.status === 'running' ? 'running' : build.status === 'succeeded' ? 'done' : 'failed';
  return (
    <div className="mlship-Build" aria-live="polite">
      <div className="mlship-ResultTitle">
        <StepIcon status={status} />
        <span>Image build: {build.status}</span>
        {build.status === 'running' && build.id && (
          <button type="button" className="jp-Button jp-mod-styled jp-mod-warn mlship-Small" onClick={onCancel}>
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
        <pre className="mlship-Log" ref={log}>
          {build.lines.join('\n')}
        </pre>
      )}
    </div>
  );
}
