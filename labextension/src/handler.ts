import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/**
 * Call the server extension (jupyter_mlship/server) under /mlship/.
 *
 * Every request goes through here so authentication (token, XSRF) is the one
 * ServerConnection does for any Jupyter API. A non-2xx answer throws an Error whose
 * message is the server's one-sentence `message`.
 */
export async function requestAPI<T>(endpoint: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'mlship', endpoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new ServerConnection.NetworkError(error as TypeError);
  }
  const text = await response.text();
  let data: any = text;
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    // Not JSON (e.g. a proxy's error page): keep the text for the message below.
  }
  if (!response.ok) {
    throw new Error(data?.message || data?.reason || `${response.status} ${response.statusText}`);
  }
  return data as T;
}

/** One earlier export, as jupyter_mlship.history.ExportRecord. */
export interface IExportRecord {
  notebook: string | null;
  name: string;
  version: string;
  project: string;
  time: number;
  verified: boolean;
  ok: boolean;
  message: string;
}

export interface IBuilders {
  available: boolean;
  builder: string | null;
  reason: string;
}

export interface IBuildState {
  id: string;
  project: string;
  status: 'running' | 'succeeded' | 'failed' | 'cancelled';
  returncode: number | null;
  lines: string[];
  next: number;
}

export function listExports(notebook: string): Promise<{ exports: IExportRecord[] }> {
  return requestAPI(`history?notebook=${encodeURIComponent(notebook)}`);
}

export function getBuilders(): Promise<IBuilders> {
  return requestAPI('builders');
}

export function startBuild(project: string): Promise<IBuildState> {
  return requestAPI('build', { method: 'POST', body: JSON.stringify({ project }) });
}

export function pollBuild(id: string, since: number): Promise<IBuildState> {
  return requestAPI(`build/${id}?since=${since}`);
}

export function cancelBuild(id: string): Promise<IBuildState> {
  return requestAPI(`build/${id}`, { method: 'DELETE' });
}

// ---- the model registry (docs: /mlship/registry endpoints, issue 8) ----

/** One immutable version of a model in the registry. */
export interface IRegistryVersion {
  version: string;
  pushed_at: string | number;
  pushed_by: string;
  notebook: string | null;
  cell: number | string | null;
  git_commit: string | null;
  verified: boolean | null;
  size_bytes: number;
  sha256s: Record<string, string>;
  created?: boolean; // on a push: false when identical bytes were already this version (nothing written)
}

export interface IAliasEvent {
  version: string;
  previous?: string | null;
  time: string | number;
  by: string;
  action: 'promote' | 'rollback';
}

export interface IAliasState {
  version: string | null;
  history: IAliasEvent[]; // oldest first
}

/**
 * The targets a rollback walks back through, as the registry computes them (AliasState.live_stack):
 * a promote pushes its version, a rollback pops one.
 */
export function rollbackStack(history: IAliasEvent[]): string[] {
  const stack: string[] = [];
  for (const event of history) {
    if (event.action === 'rollback' && stack.length) {
      stack.pop();
      if (!stack.length || stack[stack.length - 1] !== event.version) {
        stack.push(event.version);
      }
    } else {
      stack.push(event.version);
    }
  }
  return stack;
}

export interface IRegistryModel {
  name: string;
  versions: IRegistryVersion[];
  aliases: Record<string, IAliasState>;
}

export interface IRegistryListing {
  registry: string;
  models: IRegistryModel[];
}

export function listRegistry(notebook: string): Promise<IRegistryListing> {
  return requestAPI(`registry?notebook=${encodeURIComponent(notebook)}`);
}

export function pushProject(project: string): Promise<IRegistryVersion> {
  return requestAPI('registry/push', { method: 'POST', body: JSON.stringify({ project }) });
}

export function promoteVersion(name: string, version: string, alias: string): Promise<IAliasState> {
  return requestAPI('registry/promote', { method: 'POST', body: JSON.stringify({ name, version, alias }) });
}

export function rollbackAlias(name: string, alias: string): Promise<IAliasState> {
  return requestAPI('registry/rollback', { method: 'POST', body: JSON.stringify({ name, alias }) });
}
