/**
 * The registry's versions and aliases of this notebook's models: Promote a version to an alias,
 * Roll an alias back to its previous version (POST /mlship/registry/...).
 */
import * as React from 'react';

import { formatBytes, formatTime } from '../format';
import { IRegistryModel, IRegistryVersion, rollbackStack } from '../handler';
import { IRegistry } from '../hooks/useRegistry';

const DEFAULT_ALIAS = 'production';
// An alias is a path segment of the registry's layout: keep it to a safe word.
const ALIAS_PATTERN = /^[a-z][a-z0-9_-]{0,62}$/;

export function RegistryView({ registry }: { registry: IRegistry }): JSX.Element {
  const models = registry.listing?.models ?? [];
  return (
    <section className="mlship-Section" aria-label="Registry">
      <h3 className="mlship-SectionTitle">Registry</h3>
      {registry.listing && (
        <p className="mlship-Muted mlship-RegistryUri" title={registry.listing.registry}>
          {registry.listing.registry}
        </p>
      )}
      {registry.error && (
        <div className="mlship-Message mlship-mod-error" role="alert">
          {registry.error}
        </div>
      )}
      {registry.notice && (
        <div className="mlship-Message" role="status">
          {registry.notice}
        </div>
      )}
      {registry.listing && models.length === 0 && (
        <p className="mlship-Muted">No version of this notebook's models is in the registry yet: Push an export.</p>
      )}
      {models.map(model => (
        <RegistryModel key={model.name} model={model} registry={registry} />
      ))}
    </section>
  );
}

function RegistryModel({ model, registry }: { model: IRegistryModel; registry: IRegistry }): JSX.Element {
  const aliases = Object.entries(model.aliases ?? {}).sort(([a], [b]) => a.localeCompare(b));
  // Newest first: versions are integers when the registry picked them, else compare as text.
  const versions = [...model.versions].sort((a, b) =>
    b.version.localeCompare(a.version, undefined, { numeric: true })
  );
  return (
    <div className="mlship-RegistryModel" aria-label={`Registry model ${model.name}`}>
      <div className="mlship-HistoryName">{model.name}</div>
      <ul className="mlship-Aliases" aria-label={`Aliases of ${model.name}`}>
        {aliases.length === 0 && <li className="mlship-Muted">No aliases yet.</li>}
        {aliases.map(([alias, state]) => {
          const stack = rollbackStack(state.history ?? []);
          const previous = stack.length > 1 ? stack[stack.length - 2] : null;
          return (
            <li key={alias} className="mlship-Alias">
              <span className="mlship-AliasName">{alias}</span>
              <span>→ v{state.version ?? '–'}</span>
              <button
                type="button"
                className="jp-Button jp-mod-styled jp-mod-reject mlship-Small"
                disabled={!previous || registry.pending !== null}
                title={previous ? `Point ${alias} back to version ${previous}` : `${alias} has no earlier version to go back to`}
                aria-label={`Roll back ${alias} of ${model.name}`}
                onClick={() => void registry.rollback(model.name, alias)}
              >
                Roll back
              </button>
            </li>
          );
        })}
      </ul>
      <ul className="mlship-History" aria-label={`Versions of ${model.name}`}>
        {versions.map(version => (
          <RegistryVersion
            key={version.version}
            name={model.name}
            version={version}
            aliases={aliases.filter(([, s]) => s.version === version.version).map(([a]) => a)}
            knownAliases={aliases.map(([a]) => a)}
            registry={registry}
          />
        ))}
      </ul>
    </div>
  );
}

function RegistryVersion(props: {
  name: string;
  version: IRegistryVersion;
  aliases: string[];
  knownAliases: string[];
  registry: IRegistry;
}): JSX.Element {
  const { name, version, registry } = props;
  const [promoting, setPromoting] = React.useState(false);
  const [alias, setAlias] = React.useState(props.knownAliases[0] ?? DEFAULT_ALIAS);
  const aliasOk = ALIAS_PATTERN.test(alias);
  const listId = `mlship-aliases-${name}-${version.version}`;
  return (
    <li className="mlship-HistoryItem mlship-RegistryVersion">
      <span className="mlship-HistoryName">v{version.version}</span>
      {props.aliases.map(a => (
        <span key={a} className="mlship-Badge mlship-mod-ok">
          {a}
        </span>
      ))}
      {version.verified === false && <span className="mlship-Badge mlship-mod-warn">not verified</span>}
      <button
        type="button"
        className="jp-Button jp-mod-styled jp-mod-reject mlship-Small mlship-PushRight"
        disabled={registry.pending !== null}
        aria-label={`Promote ${name} v${version.version}`}
        aria-expanded={promoting}
        onClick={() => setPromoting(p => !p)}
      >
        Promote…
      </button>
      <span className="mlship-Muted mlship-HistoryTime">
        {formatTime(version.pushed_at)}
        {version.pushed_by ? ` by ${version.pushed_by}` : ''}
        {version.size_bytes ? ` · ${formatBytes(version.size_bytes)}` : ''}
        {version.git_commit ? ` · ${version.git_commit.slice(0, 8)}` : ''}
      </span>
      {promoting && (
        <form
          className="mlship-Promote"
          aria-label={`Promote ${name} v${version.version} to an alias`}
          onSubmit={event => {
            event.preventDefault();
            if (aliasOk) {
              void registry.promote(name, version.version, alias).then(ok => ok && setPromoting(false));
            }
          }}
        >
          <label className="mlship-Label" htmlFor={`${listId}-input`}>
            Alias
          </label>
          <input
            id={`${listId}-input`}
            className="jp-mod-styled mlship-Input"
            list={listId}
            value={alias}
            spellCheck={false}
            aria-invalid={!aliasOk}
            onChange={event => setAlias(event.target.value.trim())}
          />
          <datalist id={listId}>
            {[...new Set([...props.knownAliases, DEFAULT_ALIAS, 'staging', 'canary'])].map(a => (
              <option key={a} value={a} />
            ))}
          </datalist>
          <button type="submit" className="jp-Button jp-mod-styled jp-mod-accept mlship-Small" disabled={!aliasOk || registry.pending !== null}>
            Promote
          </button>
          {!aliasOk && (
            <div className="mlship-FieldError" role="alert">
              An alias is a lowercase word: letters, digits, '-' or '_', starting with a letter.
            </div>
          )}
        </form>
      )}
    </li>
  );
}
