/** Text the panel shows: sizes, durations, times, step names and project paths. */
import { PageConfig, PathExt } from '@jupyterlab/coreutils';

export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export function formatSeconds(seconds: number): string {
  return seconds < 60 ? `${seconds.toFixed(1)} s` : `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

/** Seconds since the epoch, or an ISO 8601 string (the registry's times), as local time. */
export function formatTime(time: number | string): string {
  const date = typeof time === 'number' ? new Date(time * 1000) : new Date(time);
  return isNaN(date.getTime()) ? String(time) : date.toLocaleString();
}

const STEP_LABELS: Record<string, string> = {
  capture: 'Capture the model and its code',
  render: 'Write the service project',
  verify: 'Verify in a clean environment',
  build: 'Build the container image'
};

export function stepLabel(step: string): string {
  const sub = step.split(':');
  if (sub.length > 1) {
    return sub.slice(1).join(':').replace(/[-_]/g, ' ');
  }
  return STEP_LABELS[step] ?? step;
}

/**
 * A project path as the server's contents API knows it (relative to the server root), or null
 * when the project lies outside the root. Relative paths are relative to the kernel's folder,
 * which is the notebook's folder.
 */
export function serverPath(project: string, notebookPath: string): string | null {
  const path = project.replace(/\\/g, '/');
  if (!path.startsWith('/') && !/^[A-Za-z]:\//.test(path)) {
    return PathExt.join(PathExt.dirname(notebookPath), path);
  }
  const root = PageConfig.getOption('serverRoot').replace(/\\/g, '/').replace(/\/+$/, '');
  if (root && path.startsWith(root + '/')) {
    return path.slice(root.length + 1);
  }
  return root === '' || root === '/' ? path.replace(/^\/+/, '') : null;
}
