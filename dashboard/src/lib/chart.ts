// Time-series charts on uPlot (canvas; loaded on demand), coloured from the theme.

import type uPlot from 'uplot';

export interface Series {
  label: string;
  values: (number | null)[];
}

let lib: Promise<typeof uPlot> | null = null;

function load(): Promise<typeof uPlot> {
  lib ??= Promise.all([import('uplot'), import('uplot/dist/uPlot.min.css')]).then(
    ([m]) => (m as unknown as { default: typeof uPlot }).default,
  );
  return lib;
}

export async function lineChart(
  el: HTMLElement,
  title: string,
  times: number[],
  series: Series[],
  unit: string,
  bars = false,
): Promise<uPlot> {
  const UPlot = await load();
  const css = getComputedStyle(document.documentElement);
  const text = css.getPropertyValue('--muted').trim();
  const grid = css.getPropertyValue('--border').trim();
  const colors = [css.getPropertyValue('--accent').trim(), '#d9822b', '#6d5bd0'];
  const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid } };
  return new UPlot(
    {
      title,
      width: Math.max(280, el.clientWidth),
      height: 220,
      scales: { x: { time: true } },
      axes: [axis, { ...axis, label: unit, size: 60 }],
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: colors[i % colors.length],
          width: 2,
          fill: bars ? colors[i % colors.length] : undefined,
          paths: bars ? UPlot.paths.bars!({ size: [0.6, 40] }) : undefined,
          points: { show: false },
        })),
      ],
      legend: { show: true },
    },
    [times, ...series.map((s) => s.values)] as uPlot.AlignedData,
    el,
  );
}
