import { ISignal } from '@lumino/signaling';
import * as React from 'react';

/** Re-render on a Lumino signal; `slot` also runs if given. */
export function useSignal<T, U>(signal: ISignal<T, U> | null | undefined, slot?: (args: U) => void): number {
  const [count, setCount] = React.useState(0);
  const latest = React.useRef(slot);
  latest.current = slot;
  React.useEffect(() => {
    if (!signal) {
      return;
    }
    const handler = (_: T, args: U) => {
      setCount(c => c + 1);
      latest.current?.(args);
    };
    signal.connect(handler);
    return () => {
      signal.disconnect(handler);
    };
  }, [signal]);
  return count;
}
