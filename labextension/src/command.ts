/**
 * The form's choices as the exact `%ship` / `%%ship` text the kernel runs.
 *
 * The panel and "Insert as cell" share this, so a cell inserted from the panel exports the same
 * project headlessly (`mlship export`) as the panel's Export did.
 */

/** Same rule as jupyter_mlship.spec.NAME_PATTERN. */
export const NAME_PATTERN = /^[a-z][a-z0-9_-]{0,62}$/;

export interface IShipForm {
  name: string;
  target: 'model' | 'entry';
  model: string;
  method: string;
  entry: string;
  sample: string; // a variable of the kernel
  rows: string; // "" = the whole sample, else the first N rows
  sampleType: string; // "DataFrame", "ndarray", "list[str]", ...
  version: string;
  out: string;
  verify: boolean;
}

export type FormErrors = Partial<Record<keyof IShipForm, string>>;

// The %ship line is split at whitespace outside brackets and string literals and is not $/{} expanded
// (jupyter_mlship/magic_args.py); a word with whitespace is written in the quotes it does not contain.
const UNSAFE = /\s/;

export function magicWord(value: string): string {
  if (!/[\s'"]/.test(value)) {
    return value;
  }
  return value.includes("'") ? `"${value}"` : `'${value}'`;
}

export function nameError(name: string): string | undefined {
  if (!name) {
    return 'Give the service a name.';
  }
  if (!NAME_PATTERN.test(name)) {
    return "Use 1-63 characters: lowercase letters, digits, '-' or '_', starting with a letter.";
  }
  return undefined;
}

export function validate(form: IShipForm): FormErrors {
  const errors: FormErrors = {};
  const name = nameError(form.name);
  if (name) {
    errors.name = name;
  }
  if (form.target === 'model' && !form.model) {
    errors.model = 'Pick the model to serve.';
  }
  if (form.target === 'model' && !form.method) {
    errors.method = 'Pick the method the service calls.';
  }
  if (form.target === 'entry' && !form.entry) {
    errors.entry = 'Pick the entry function.';
  }
  if (!form.sample) {
    errors.sample = 'Pick a sample: it fixes the request schema and becomes the golden test.';
  }
  if (form.rows && !/^[1-9][0-9]*$/.test(form.rows)) {
    errors.rows = 'A positive whole number, or empty for the whole sample.';
  }
  if (!form.version || UNSAFE.test(form.version)) {
    errors.version = 'A version without spaces, e.g. 1 or 2024-06.';
  }
  if (form.out.includes("'") && form.out.includes('"')) {
    errors.out = 'A folder name with either single or double quotes, not both.';
  }
  return errors;
}

/** The sample expression: the variable, or its first rows. */
export function sampleExpression(form: IShipForm): string {
  if (!form.rows) {
    return form.sample;
  }
  return form.sampleType === 'DataFrame' ? `${form.sample}.head(${form.rows})` : `${form.sample}[:${form.rows}]`;
}

export interface ICommandOptions {
  dryRun?: boolean;
  events?: boolean; // structured events for the panel (docs/panel-protocol.md)
}

/** The cell text: `%ship` line form for a model, `%%ship` cell form for an entry function. */
export function shipCommand(form: IShipForm, options: ICommandOptions = {}): string {
  const args = [form.name, '--sample', sampleExpression(form)];
  if (form.target === 'model') {
    args.push('--model', form.model, '--method', form.method);
  } else {
    args.push('--entry', form.entry);
  }
  if (form.out && form.out !== 'services') {
    args.push('--out', magicWord(form.out));
  }
  if (form.version && form.version !== '1') {
    args.push('--version', form.version);
  }
  if (!form.verify) {
    args.push('--no-verify');
  }
  if (options.dryRun) {
    args.push('--dry-run');
  }
  if (options.events) {
    args.push('--events');
  }
  if (form.target === 'model') {
    return `%ship ${args.join(' ')}`;
  }
  // The cell form needs a body that is valid Python; the function itself was defined earlier.
  return `%%ship ${args.join(' ')}\n# entry function: ${form.entry}, defined earlier in the notebook`;
}

/** A default service name from a notebook file name: "Churn Model.ipynb" -> "churn-model". */
export function defaultName(notebookPath: string): string {
  const base = (notebookPath.split('/').pop() || '').replace(/\.ipynb$/i, '');
  const name = base
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, '-')
    .replace(/^[^a-z]+/, '')
    .replace(/-+$/, '')
    .slice(0, 63);
  return name || 'model';
}
