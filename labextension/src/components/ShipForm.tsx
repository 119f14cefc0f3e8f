/** The form: what to ship, and the Review / Export / Cancel / Insert as cell buttons. */
import { runIcon, stopIcon } from '@jupyterlab/ui-components';
import * as React from 'react';

import { FormErrors, IShipForm, nameError, shipCommand } from '../command';
import { ICandidates } from '../kernel';
import { SampleFields, TargetFields } from './CandidateFields';
import { Field } from './Field';

export interface IShipFormProps {
  form: IShipForm;
  candidates: ICandidates | null;
  errors: FormErrors; // every error of the form
  visibleErrors: FormErrors; // the ones to show now (after a submit, or the name as it is typed)
  submitted: boolean; // Review, Export or Insert was pressed: all errors show
  running: boolean;
  cancelling: boolean;
  update: (changes: Partial<IShipForm>) => void;
  onNameTyped: () => void;
  onReview: () => void;
  onExport: () => void;
  onCancel: () => void;
  onInsertCell: () => void;
}

export function ShipForm(props: IShipFormProps): JSX.Element {
  const { form, errors, visibleErrors, running, update } = props;
  const formOk = Object.keys(errors).length === 0;
  return (
    <form
      className="mlship-Form"
      onSubmit={event => {
        event.preventDefault();
        props.onExport();
      }}
      aria-label="Ship form"
    >
      <Field id="mlship-name" label="Name" error={visibleErrors.name} hint="The service's folder and image name.">
        <input
          id="mlship-name"
          className="jp-mod-styled mlship-Input"
          value={form.name}
          spellCheck={false}
          autoComplete="off"
          aria-invalid={!!nameError(form.name)}
          onChange={event => {
            props.onNameTyped();
            update({ name: event.target.value });
          }}
        />
      </Field>

      <fieldset className="mlship-Fieldset">
        <legend className="mlship-Label">Serve</legend>
        <label className="mlship-Radio">
          <input type="radio" name="mlship-target" checked={form.target === 'model'} onChange={() => update({ target: 'model' })} />
          a model's method
        </label>
        <label className="mlship-Radio">
          <input type="radio" name="mlship-target" checked={form.target === 'entry'} onChange={() => update({ target: 'entry' })} />
          an entry function
        </label>
      </fieldset>

      <TargetFields form={form} candidates={props.candidates} errors={visibleErrors} update={update} />
      <SampleFields form={form} candidates={props.candidates} errors={visibleErrors} update={update} />

      <div className="mlship-Row">
        <Field id="mlship-version" label="Version" error={visibleErrors.version} narrow>
          <input
            id="mlship-version"
            className="jp-mod-styled mlship-Input"
            value={form.version}
            spellCheck={false}
            onChange={event => update({ version: event.target.value })}
          />
        </Field>
        <Field id="mlship-out" label="Output folder" error={visibleErrors.out} hint="Relative to the notebook's folder.">
          <input
            id="mlship-out"
            className="jp-mod-styled mlship-Input"
            value={form.out}
            spellCheck={false}
            placeholder="services"
            onChange={event => update({ out: event.target.value })}
          />
        </Field>
      </div>

      <label className="mlship-Checkbox">
        <input type="checkbox" checked={form.verify} onChange={event => update({ verify: event.target.checked })} />
        Verify: run the project's tests in a clean environment
      </label>

      {form.sample && (form.model || form.entry) && !errors.name && (
        <pre className="mlship-Command" aria-label="Magic the panel runs">
          {shipCommand(form)}
        </pre>
      )}

      <div className="mlship-Actions">
        <button
          type="button"
          className="jp-Button jp-mod-styled jp-mod-reject"
          disabled={running}
          onClick={props.onReview}
          title="Show what would be exported (a dry run: nothing is written)"
        >
          Review
        </button>
        <button
          type="submit"
          className="jp-Button jp-mod-styled jp-mod-accept"
          disabled={running}
          title="Export the service project and verify it"
        >
          <runIcon.react tag="span" className="mlship-ButtonIcon" />
          <span>Export</span>
        </button>
        {running ? (
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-warn"
            onClick={props.onCancel}
            disabled={props.cancelling}
            title="Interrupt the kernel"
          >
            <stopIcon.react tag="span" className="mlship-ButtonIcon" />
            <span>{props.cancelling ? 'Cancelling…' : 'Cancel'}</span>
          </button>
        ) : (
          <button
            type="button"
            className="jp-Button jp-mod-styled jp-mod-reject"
            onClick={props.onInsertCell}
            title="Write this %ship cell below the active cell, so a headless `mlship export` gives the same project"
          >
            Insert as cell
          </button>
        )}
      </div>
      {props.submitted && !formOk && (
        <div className="mlship-Message mlship-mod-error" role="alert">
          Fix the fields marked above first.
        </div>
      )}
    </form>
  );
}
