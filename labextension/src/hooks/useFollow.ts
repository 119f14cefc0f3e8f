import * as React from 'react';

// How close to the bottom (px) still counts as "reading the newest lines".
const STICKY_PX = 24;

/**
 * Keep a scrolling log on its newest line as `length` grows, like a terminal: unless the user
 * scrolled up to read older lines, then it stays where they are.
 */
export function useFollow<T extends HTMLElement>(length: number): React.RefObject<T> {
  const ref = React.useRef<T>(null);
  const following = React.useRef(true);
  React.useEffect(() => {
    const node = ref.current;
    if (!node) {
      return;
    }
    const onScroll = () => {
      following.current = node.scrollHeight - node.scrollTop - node.clientHeight <= STICKY_PX;
    };
    node.addEventListener('scroll', onScroll);
    return () => node.removeEventListener('scroll', onScroll);
  }, [ref.current]);
  React.useLayoutEffect(() => {
    const node = ref.current;
    if (node && following.current) {
      node.scrollTop = node.scrollHeight;
    }
  }, [length, ref.current]);
  return ref;
}

/** Scroll an element into the panel's view when `key` changes to a truthy value (a new result). */
export function useRevealOn<T extends HTMLElement>(key: unknown): React.RefObject<T> {
  const ref = React.useRef<T>(null);
  React.useLayoutEffect(() => {
    if (key && ref.current) {
      ref.current.scrollIntoView({ block: 'nearest', inline: 'nearest' });
    }
  }, [key]);
  return ref;
}
