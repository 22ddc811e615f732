import type { Engine } from '../engine.js';
import { RowChunkedTensor, Tensor } from '../tensor.js';
import { assertShape, elementwiseGrid } from './common.js';

/**
 * Embedding lookup: out[..., :] = table[ids[...], :]. ids is an i32 tensor; the
 * table may be split into row chunks (one dispatch per chunk, same output).
 */
export function gather(e: Engine, table: Tensor | RowChunkedTensor, ids: Tensor): Tensor {
  assertShape('gather', ids.dtype === 'i32', `ids must be i32, got ${ids}`);
  e.assertNoGrad('gather', ...(table instanceof Tensor ? [table] : table.chunks.map((c) => c.tensor)));
  const D = table.shape[1];
  const out = e.empty([...ids.shape, D], table.dtype);
  const chunks = table instanceof Tensor ? [{ firstRow: 0, tensor: table }] : table.chunks;
  const { workgroups, groupsX } = elementwiseGrid(out.size);
  for (const { firstRow, tensor } of chunks) {
    e.run({
      kernel: 'gather_rows',
      bindings: { ids, table: tensor, out },
      params: { rows: ids.size, D, firstRow, chunkRows: tensor.shape[0], groupsX },
      workgroups,
    });
  }
  return out;
}
