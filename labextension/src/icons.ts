import { LabIcon } from '@jupyterlab/ui-components';

import shipSvg from '../style/icons/ship.svg';

export const shipIcon = new LabIcon({ name: 'jupyter-mlship:ship', svgstr: shipSvg });
