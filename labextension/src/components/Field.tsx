import { HTMLSelect } from '@jupyterlab/ui-components';
import * as React from 'react';

/** A labelled form field with its error (or else its hint) below. */
export function Field(props: {
  id: string;
  label: string;
  error?: string;
  hint?: string;
  narrow?: boolean;
  children: React.ReactNode;
}): JSX.Element {
  return (
    <div className={`mlship-Field${props.narrow ? ' mlship-mod-narrow' : ''}`}>
      <label className="mlship-Label" htmlFor={props.id}>
        {props.label}
      </label>
      {props.children}
      {props.error ? (
        <div className="mlship-FieldError" id={`${props.id}-error`} role="alert">
          {props.error}
        </div>
      ) : (
        props.hint && <div className="mlship-Hint">{props.hint}</div>
      )}
    </div>
  );
}

/**
 * A labelled select drawn as JupyterLab draws its own (HTMLSelect: caret, theme colours); `options` are
 * [value, label] pairs, `empty` an optional first "nothing chosen" entry. A long label ends in an
 * ellipsis and shows whole as the tooltip.
 */
export function SelectField(props: {
  id: string;
  label: string;
  error?: string;
  hint?: string;
  value: string;
  empty?: string;
  options: [string, string][];
  onChange: (value: string) => void;
}): JSX.Element {
  const options = [
    ...(props.empty !== undefined ? [{ value: '', label: props.empty }] : []),
    ...props.options.map(([value, label]) => ({ value, label }))
  ];
  const chosen = props.options.find(([value]) => value === props.value)?.[1];
  return (
    <Field id={props.id} label={props.label} error={props.error} hint={props.hint}>
      <HTMLSelect
        id={props.id}
        className="mlship-Select"
        value={props.value}
        title={chosen ?? props.empty}
        options={options}
        aria-invalid={!!props.error}
        onChange={event => props.onChange(event.target.value)}
      />
    </Field>
  );
}
