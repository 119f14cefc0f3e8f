import * as React from 'react';

export interface IPushOutcome {
  project: string;
  from: string; // which button: 'result', or 'history:<time>' of an earlier export
  ok: boolean;
  message: string; // "Pushed ... as version N." or the server's one sentence
}

/** What a Push did, beside the button that started it. */
export function PushOutcome({ outcome }: { outcome: IPushOutcome }): JSX.Element {
  return (
    <div
      className={`mlship-Message mlship-PushOutcome${outcome.ok ? '' : ' mlship-mod-error'}`}
      role={outcome.ok ? 'status' : 'alert'}
    >
      {outcome.message}
    </div>
  );
}
