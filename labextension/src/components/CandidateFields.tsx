/** The choices read from the kernel: model and method (or entry function), and the sample. */
import * as React from 'react';

import { FormErrors, IShipForm } from '../command';
import { rowsFor } from '../defaults';
import { formatBytes } from '../format';
import { ICandidates } from '../kernel';
import { Field, SelectField } from './Field';

export interface ICandidateFieldsProps {
  form: IShipForm;
  candidates: ICandidates | null;
  errors: FormErrors;
  update: (changes: Partial<IShipForm>) => void;
}

export function TargetFields({ form, candidates, errors, update }: ICandidateFieldsProps): JSX.Element {
  if (form.target === 'entry') {
    return (
      <SelectField
        id="mlship-entry"
        label="Entry function"
        error={errors.entry}
        hint="A function defined in this notebook; the service calls it with the request instances."
        value={form.entry}
        empty={candidates?.functions.length ? 'Choose a function…' : 'None defined in this notebook'}
        options={(candidates?.functions ?? []).map(f => [f.name, `${f.name}${f.signature}`])}
        onChange={value => update({ entry: value })}
      />
    );
  }
  const models = candidates?.models ?? [];
  return (
    <>
      <SelectField
        id="mlship-model"
        label="Model"
        error={errors.model}
        value={form.model}
        empty={models.length ? 'Choose a model…' : 'None found'}
        options={models.map(m => [m.name, `${m.name} — ${m.type}`])}
        onChange={value => {
          const model = models.find(m => m.name === value);
          update({ model: value, method: model?.methods[0] ?? 'predict' });
        }}
      />
      <SelectField
        id="mlship-method"
        label="Method"
        error={errors.method}
        value={form.method}
        options={(models.find(m => m.name === form.model)?.methods ?? ['predict']).map(m => [m, m])}
        onChange={value => update({ method: value })}
      />
    </>
  );
}

export function SampleFields({ form, candidates, errors, update }: ICandidateFieldsProps): JSX.Element {
  const samples = candidates?.samples ?? [];
  return (
    <div className="mlship-Row">
      <SelectField
        id="mlship-sample"
        label="Sample"
        error={errors.sample}
        hint="Fixes the request schema and becomes the golden test."
        value={form.sample}
        empty={samples.length ? 'Choose a sample…' : 'None found'}
        options={samples.map(s => [s.name, `${s.name} — ${s.type} ${s.shape.join('×')}, ${formatBytes(s.nbytes)}`])}
        onChange={value => {
          const sample = samples.find(s => s.name === value);
          update({ sample: value, sampleType: sample?.type ?? '', rows: rowsFor(sample) });
        }}
      />
      <Field id="mlship-rows" label="Rows" error={errors.rows} narrow>
        <input
          id="mlship-rows"
          className="jp-mod-styled mlship-Input"
          inputMode="numeric"
          placeholder="all"
          value={form.rows}
          onChange={event => update({ rows: event.target.value.trim() })}
        />
      </Field>
    </div>
  );
}
