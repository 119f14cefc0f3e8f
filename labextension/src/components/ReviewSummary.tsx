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

/** What a row says in a word or two: its first cell, with the second when it is a version or a type. */
function label(section: ISection, row: string[]): string {
  const first = plain(row[0] ?? '');
  if (/^Dependencies/.test(section.title) && row[1]) {
    return `${first} ${plain(row[1])}`;
  }
  return first;
}

export function ReviewSummary(props: { review: IReviewEvent; onOpen: () => void }): JSX.Element {
  const sections = sectionsOf(props.review);
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
          const items = section.rows.map(row => label(section, row)).filter(Boolean);
          return (
            <React.Fragment key={section.title}>
              <dt className={warn ? 'mlship-mod-warn' : ''}>{section.title.replace(/ \(.*\)$/, '')}</dt>
              <dd title={items.join('\n')} className={warn ? 'mlship-mod-warn mlship-mod-wrap' : ''}>
                {items.length === 0 ? <span className="mlship-Muted">none</span> : items.join(', ')}
              </dd>
            </React.Fragment>
          );
        })}
      </dl>
    </div>
  );
}
