/** A run of the magic: progress, then its result (or its one-sentence failure), build and review summary. */
import { buildIcon, checkIcon, LabIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { formatSeconds, serverPath } from '../format';
import { useRevealOn } from '../hooks/useFollow';
import { BuildView } from '../hooks/useImageBuild';
import { IBuilders } from '../handler';
import { IRun, runFailure } from '../run';
import { IPushOutcome, PushOutcome } from './PushOutcome';
import { BuildStatus } from './BuildStatus';
import { ReviewSummary } from './ReviewSummary';
import { RunProgress } from './RunProgress';

export interface IRunViewProps {
  run: IRun;
  now: number;
  builders: IBuilders | null;
  build: BuildView | null;
  pushing: boolean;
  pushed: IPushOutcome | null; // the last Push of this run's project
  onOpen: (project: string, file: string, factory?: string) => void;
  onOpenReview: () => void;
  onBuild: (project: string) => void;
  onCancelBuild: () => void;
  onPush: (project: string) => void;
}

export function RunView(props: IRunViewProps): JSX.Element {
  const { run, now } = props;
  const elapsed = Math.max(0, (run.finishedAt ?? now) - run.startedAt) / 1000;
  const title = run.kind === 'review' ? 'Review' : 'Export';
  const failure = runFailure(run);
  // The outcome is what the user waited for: bring it into the sidebar's view as it arrives.
  const outcome = useRevealOn<HTMLDivElement>(run.running ? null : run.result ?? failure);
  return (
    <section className="mlship-Section mlship-Run" aria-label={`${title} progress`}>
      <h3 className="mlship-SectionTitle">
        {title}
        <span className="mlship-Muted mlship-Elapsed" role="timer">
          {run.running ? `running for ${Math.floor(elapsed)} s` : `took ${formatSeconds(elapsed)}`}
        </span>
      </h3>
      <RunProgress run={run} now={now} />
      <div ref={outcome} className="mlship-Outcome">
        {run.result?.ok && <RunResult {...props} />}
        {failure && (
          <div className="mlship-Message mlship-mod-error" role="alert">
            {failure}
          </div>
        )}
      </div>
      {!run.running && failure && run.output.trim() && (
        <details className="mlship-Details">
          <summary>Output</summary>
          <pre className="mlship-Log">{run.output.slice(-6000)}</pre>
        </details>
      )}
      {run.result?.tests?.output && (
        <details className="mlship-Details">
          <summary>Test output</summary>
          <pre className="mlship-Log">{run.result.tests.output}</pre>
        </details>
      )}
      {props.build && <BuildStatus build={props.build} onCancel={props.onCancelBuild} />}
      {run.review && <ReviewSummary review={run.review} onOpen={props.onOpenReview} />}
    </section>
  );
}

function ActionButton(props: {
  label: string;
  title: string;
  disabled?: boolean;
  accept?: boolean;
  icon?: LabIcon;
  onClick: () => void;
}): JSX.Element {
  const Icon = props.icon;
  return (
    <button
      type="button"
      className={`jp-Button jp-mod-styled ${props.accept ? 'jp-mod-accept' : 'jp-mod-reject'}`}
      disabled={props.disabled}
      title={props.title}
      onClick={props.onClick}
    >
      {Icon && <Icon.react tag="span" className="mlship-ButtonIcon" />}
      <span>{props.label}</span>
    </button>
  );
}

function RunResult({ run, builders, build, pushing, pushed, onOpen, onBuild, onPush }: IRunViewProps): JSX.Element {
  const result = run.result!;
  const project = result.project;
  const projectPath = project ? serverPath(project, run.notebookPath) : null;
  const outside = 'The project lies outside the folder JupyterLab serves';
  return (
    <div className="mlship-Result mlship-mod-ok" role="status">
      <div className="mlship-ResultTitle">
        <checkIcon.react tag="span" className="mlship-StepIcon mlship-mod-done" />
        <span>
          {run.kind === 'review' ? 'Review ready' : result.verified ? 'Exported and verified' : 'Exported (not verified)'}
        </span>
      </div>
      {!project && (
        <div className="mlship-ResultMessage">
          {run.kind === 'review'
            ? 'Dry run: nothing was written. The whole review opened in a tab beside the notebook; its summary is below.'
            : result.message}
        </div>
      )}
      {project && (
        <div className="mlship-ResultPath">
          <code title={project}>{projectPath ?? project}</code>
        </div>
      )}
      {result.tests && (
        <div className="mlship-Tests">
          Tests: <strong>{result.tests.passed} passed</strong>, {result.tests.failed} failed
        </div>
      )}
      {project && (
        <div className="mlship-Actions">
          <ActionButton
            label="Open REVIEW.md"
            title={projectPath ? 'Open the review of the exported project, rendered' : outside}
            disabled={!projectPath}
            onClick={() => onOpen(project, 'REVIEW.md', 'Markdown Preview')}
          />
          <ActionButton
            label="Open app/main.py"
            title={projectPath ? "Open the service's FastAPI app" : outside}
            disabled={!projectPath}
            onClick={() => onOpen(project, 'app/main.py')}
          />
          <ActionButton
            label="Push"
            title="Publish this project to the model registry as a new immutable version"
            disabled={pushing}
            onClick={() => onPush(project)}
          />
          <ActionButton
            label="Build image"
            accept
            icon={buildIcon}
            title={builders?.available ? `Build the container image with ${builders.builder}` : builders?.reason ?? ''}
            disabled={!builders?.available || build?.status === 'running'}
            onClick={() => onBuild(project)}
          />
        </div>
      )}
      {pushed && <PushOutcome outcome={pushed} />}
      {project && builders && !builders.available && (
        <div className="mlship-Hint">Build image is unavailable: {builders.reason}</div>
      )}
    </div>
  );
}
