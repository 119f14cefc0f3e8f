/** The form's starting choices from what the kernel holds. */
import { IShipForm } from './command';
import { ICandidates, ISampleCandidate } from './kernel';

// Golden tests stay small: a bigger sample is cut to its first rows unless the user says otherwise.
export const DEFAULT_ROWS = 20;

export const EMPTY_FORM: IShipForm = {
  name: '',
  target: 'model',
  model: '',
  method: 'predict',
  entry: '',
  sample: '',
  rows: '',
  sampleType: '',
  version: '1',
  out: 'services',
  verify: true
};

/**
 * How much a variable's name says "a sample of requests", higher first. Data scientists name held-out
 * rows X_test, X_val, sample, examples; training data and labels are what a service must NOT be
 * tested on as inputs (labels are not inputs at all).
 */
export function sampleScore(name: string): number {
  const words = name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean);
  const has = (...options: string[]) => words.some(w => options.includes(w));
  if (has('y', 'label', 'labels', 'target', 'targets')) {
    return -2;
  }
  if (has('sample', 'samples', 'example', 'examples', 'request', 'requests', 'payload')) {
    return 5;
  }
  if (has('test', 'tst', 'holdout', 'unseen', 'new', 'inference', 'score', 'scoring')) {
    return 4;
  }
  if (has('val', 'valid', 'validation', 'dev', 'eval')) {
    return 3;
  }
  if (has('train', 'training', 'trn', 'fit')) {
    return -1;
  }
  return 0;
}

/** The sample the form starts on: the best-named one, ties broken by the kernel's (alphabetical) order. */
export function pickSample(samples: ISampleCandidate[]): ISampleCandidate | undefined {
  let best: ISampleCandidate | undefined;
  for (const sample of samples) {
    if (!best || sampleScore(sample.name) > sampleScore(best.name)) {
      best = sample;
    }
  }
  return best;
}

export function rowsFor(sample: ISampleCandidate | undefined): string {
  return sample && sample.shape[0] > DEFAULT_ROWS ? String(DEFAULT_ROWS) : '';
}

/** Keep the user's choices that still exist in the kernel; fill the others with the best guess. */
export function withDefaults(form: IShipForm, found: ICandidates): IShipForm {
  const next = { ...form };
  if (!found.models.some(m => m.name === next.model)) {
    next.model = found.models[0]?.name ?? '';
    next.method = found.models[0]?.methods[0] ?? 'predict';
  }
  if (!found.functions.some(f => f.name === next.entry)) {
    next.entry = found.functions[0]?.name ?? '';
  }
  const sample = found.samples.find(s => s.name === next.sample) ?? pickSample(found.samples);
  if (sample && sample.name !== next.sample) {
    next.rows = rowsFor(sample);
  }
  next.sample = sample?.name ?? '';
  next.sampleType = sample?.type ?? '';
  if (!found.models.length && found.functions.length) {
    next.target = 'entry';
  }
  return next;
}
