/** The review in a few lines for the sidebar; the whole review opens in a main-area tab. */
import * as React from 'react';

import { IReviewEvent } from '../kernel';

interface ISection {
  title: string;
  header: string[];
  rows: string[][];
}

/** A table cell as plain text: REVIEW.md's code spans and Markdown escapes removed. */
function plain(cell: string): string {
  return cell
    .replace(/^`+|`+$/g, '')
    .replace(/\\([\\`*_{}[\]()#+\-.!|<>~])/g, '$1')
    .trim();
}

function sectionsOf(review: IReviewEvent): ISection[] {
  const sections = review.review.sections;
  if (!Array.isArray(sections)) {
    return [];
  }
  return sections.filter(
    (s): s is ISection => !!s && typeof s === 'object' && 'title' in s && Array.isArray((s as ISection).rows)
  );
}


/** What the sidebar says of a section: a count where a list would not fit, else the names. */
function items(section: ISection): string[] {
  if (/^Dependencies/.test(section.title)) {
    return section.rows.length ? [`${section.rows.length} pinned`] : [];
  }
  return section.rows.map(row => plain(row[0] ?? '')).filter(Boolean);
}

// The verification shows in the result (tests passed/failed); the review of a run is made before it.
const LEFT_OUT = /^Verification/;

export function ReviewSummary(props: { review: IReviewEvent; onOpen: () => void }): JSX.Element {
  const sections = sectionsOf(props.review).filter(s => !LEFT_OUT.test(s.title));
  return (
    <div className="mlship-ReviewSummary" aria-label="Review summary">
      <div className="mlship-ReviewSummaryHead">
        <span className="mlship-ReviewSummaryTitle">Review</span>
        <button
          type="button"
          className="jp-Button jp-mod-styled jp-mod-reject mlship-Small"
          onClick={props.onOpen}
          title="Open the whole review in a tab beside the notebook"
        >
          Open review
        </button>
      </div>
      <dl className="mlship-Summary">
        {sections.map(section => {
          const warn = /^Warnings|^Secrets/.test(section.title) && section.rows.length > 0;
          const shown = items(section);
          return (
            <React.Fragment key={section.title}>
              <dt className={warn ? 'mlship-mod-warn' : ''}>{section.title.replace(/ \(.*\)$/, '')}</dt>
              <dd title={shown.join('\n')} className={warn ? 'mlship-mod-warn mlship-mod-wrap' : ''}>
                {shown.length === 0 ? <span className="mlship-Muted">none</span> : shown.join(', ')}
              </dd>
            </React.Fragment>
          );
        })}
      </dl>
    </div>
  );
}
