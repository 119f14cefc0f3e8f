/** A run's steps with their times, and the live log of long steps (verify, build). */
import * as React from 'react';

import { formatSeconds, stepLabel } from '../format';
import { useFollow } from '../hooks/useFollow';
import { IRun, runFailure } from '../run';
import { StepIcon } from './StepIcon';

// Lines kept in the live log's DOM: the newest ones are what a person reads while it runs.
const SHOWN_LOG_LINES = 200;

export function RunProgress({ run, now }: { run: IRun; now: number }): JSX.Element {
  const failure = runFailure(run);
  const [logOpen, setLogOpen] = React.useState(true);
  const log = useFollow<HTMLPreElement>(logOpen ? run.logs.length : 0);
  return (
    <>
      <ol className="mlship-Steps" aria-live="polite">
        {run.steps.length === 0 && run.running && (
          <li className="mlship-Step">
            <StepIcon status="running" />
            <span className="mlship-StepLabel">Starting in the kernel…</span>
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
              {!['running', 'done', 'failed'].includes(step.status) && <span className="mlship-Muted"> ({step.status})</span>}
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
        // Open while the run goes on (the user may close it); closed by default once it is over.
        <details
          className="mlship-Details"
          open={run.running ? logOpen : false}
          onToggle={event => run.running && setLogOpen((event.target as HTMLDetailsElement).open)}
        >
          <summary>Log ({run.logs.length} lines)</summary>
          <pre className="mlship-Log mlship-LiveLog" ref={log} aria-label="Live log">
            {run.logs.slice(-SHOWN_LOG_LINES).join('\n')}
          </pre>
        </details>
      )}
    </>
  );
}
