// The official Node SDK (npm package iii-sdk) serving bench::echo.
// node echo.mjs [URL] [--functions N] [--extra]   (same command line as the Python workers)
import { registerWorker } from 'iii-sdk'

let url = process.env.III_URL || 'ws://127.0.0.1:49134'
let functions = 1
let extra = false
const args = process.argv.slice(2)
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--functions') functions = Math.max(1, Number(args[++i]))
  else if (args[i] === '--extra') extra = true
  else url = args[i]
}

process.on('SIGTERM', () => process.exit(0))

const iii = registerWorker(url, { workerName: 'bench-echo' })
const echo = async (data) => data
if (extra) {
  iii.registerFunction('bench::relay', async (data) =>
    iii.trigger({ function_id: 'bench::echo', payload: data }),
  )
  iii.registerFunction('bench::sleep', async (data) => {
    await new Promise((resolve) => setTimeout(resolve, 20))
    return data
  })
}
for (let i = 0; i < functions - 1; i++) iii.registerFunction(`bench::fn::${i}`, echo)
iii.registerFunction('bench::echo', echo)
