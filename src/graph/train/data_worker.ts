// A thread of the training data pipeline (data.ts): builds the samples TrainData sends it, the
// images moved back without copies. The context (options, chains) comes once, as workerData.
import { parentPort, workerData } from 'node:worker_threads';
import { makeSample, type DataState, type Item, type SampleContext } from './data.js';

const ctx = workerData as SampleContext;
const port = parentPort!;
port.on('message', ({ id, item, at }: { id: number; item: Item; at: DataState }) => {
  makeSample(ctx, item, at).then(
    (result) => {
      const moved = 'sample' in result ? [result.sample.hq, result.sample.lq, result.sample.clip, result.sample.noise].map((a) => a.buffer as ArrayBuffer) : [];
      port.postMessage({ id, result }, moved);
    },
    (e: Error) => port.postMessage({ id, error: e.stack ?? String(e) }),
  );
});
