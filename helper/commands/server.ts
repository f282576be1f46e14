// `spacer server`: the link server (server/serve.ts), started in the background by the client
// make runs (server/client.c); not a command a user needs to run.
import type { Argv } from 'yargs';
import { SpacerError } from '../errors.js';
import type { Command } from './common.js';

export const serverCommand: Command = {
  command: 'server',
  describe: false,
  builder: (y: Argv) =>
    y
      .option('socket', {
        type: 'string',
        demandOption: true,
        describe: 'the Unix socket to listen at',
      })
      .option('idle', {
        type: 'number',
        describe:
          'seconds without a request before the server stops (default: SPACER_SERVER_IDLE, else 600)',
      }),
  handler: async (a) => {
    const idle = Number(a.idle ?? process.env.SPACER_SERVER_IDLE ?? 600);
    if (!(idle > 0)) throw new SpacerError(`--idle ${a.idle}: give a number of seconds above 0`);
    const { serve } = await import('../server/serve.js');
    await serve(String(a.socket), idle);
  },
};
