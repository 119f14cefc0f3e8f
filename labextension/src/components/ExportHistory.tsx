/** Earlier exports of this notebook, each with its review and a Push to the registry. */
import * as React from 'react';

import { formatTime } from '../format';
import { IExportRecord } from '../handler';
import { IPushOutcome, PushOutcome } from './PushOutcome';

export interface IExportHistoryProps {
  exports: IExportRecord[];
  error: string | null;
  canOpen: (record: IExportRecord) => boolean;
  pushing: (project: string) => boolean;
  pushed: IPushOutcome | null; // the last Push from this panel
  onOpenReview: (record: IExportRecord) => void;
  onPush: (record: IExportRecord) => void;
}

export function ExportHistory(props: IExportHistoryProps): JSX.Element {
  return (
    <section className="mlship-Section" aria-label="Earlier exports">
      <h3 className="mlship-SectionTitle">Earlier exports of this notebook</h3>
      {props.error && <div className="mlship-Message mlship-mod-error">{props.error}</div>}
      {props.exports.length === 0 && !props.error ? (
        <p className="mlship-Muted">None yet.</p>
      ) : (
        <ul className="mlship-History">
          {props.exports.map(record => (
            <li key={`${record.project}-${record.time}`} className="mlship-HistoryItem">
              <span className="mlship-HistoryName">
                {record.name} <span className="mlship-Muted">v{record.version}</span>
              </span>
              <span className={`mlship-Badge ${record.ok && record.verified ? 'mlship-mod-ok' : 'mlship-mod-warn'}`}>
                {!record.ok ? 'failed' : record.verified ? 'verified' : 'not verified'}
              </span>
              <span className="mlship-Muted mlship-HistoryTime">{formatTime(record.time)}</span>
              {record.ok && (
                <span className="mlship-HistoryActions">
                  {props.canOpen(record) && (
                    <button
                      type="button"
                      className="jp-Button jp-mod-styled jp-mod-reject mlship-Small"
                      onClick={() => props.onOpenReview(record)}
                      title={record.project}
                      aria-label={`Open REVIEW.md of ${record.name} v${record.version}`}
                    >
                      Open review
                    </button>
                  )}
                  <button
                    type="button"
                    className="jp-Button jp-mod-styled jp-mod-reject mlship-Small"
                    disabled={props.pushing(record.project)}
                    onClick={() => props.onPush(record)}
                    title={`Publish ${record.project} to the model registry`}
                    aria-label={`Push ${record.name} v${record.version} to the registry`}
                  >
                    Push
                  </button>
                </span>
              )}
              {props.pushed?.from === `history:${record.time}` && <PushOutcome outcome={props.pushed} />}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
