import { defineConfig } from 'vitest/config';

// The software GPU (lavapipe) uses every core for each dispatch, so test files run
// one at a time; forks keep each file's Dawn instance in its own process.
export default defineConfig({
  test: {
    include: ['tests/**/*.test.ts'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 120_000,
  },
});
