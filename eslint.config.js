// ESLint for the helper, the tests and the scripts (npm run lint; CI runs it). Formatting is
// prettier's; this checks what a formatter cannot. Lines are at most 100 characters, except for a
// long string, template or regex literal: an error message stays one greppable line.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'helper/dist/**',
      'node_modules/**',
      'bench/results/**',
      'example/**',
      'test/fixtures/**',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      'max-len': [
        'error',
        {
          code: 100,
          ignoreStrings: true,
          ignoreTemplateLiterals: true,
          ignoreRegExpLiterals: true,
          ignoreUrls: true,
        },
      ],
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_' },
      ],
      eqeqeq: ['error', 'smart'],
      'no-console': 'off',
    },
  },
  {
    // Reading JSON (the map, plans, records, reproducers, the bench's figures): each field is
    // validated where it is read, so the parsed value is `any` until then.
    files: [
      'helper/map.ts',
      'helper/report.ts',
      'helper/rewrite.ts',
      'helper/finish.ts',
      'helper/commands/common.ts',
      'helper/fuzz/reproducers.ts',
      'test/**/*.ts',
    ],
    rules: { '@typescript-eslint/no-explicit-any': 'off' },
  },
);
