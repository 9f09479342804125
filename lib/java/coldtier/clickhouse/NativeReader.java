package coldtier.clickhouse;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import org.apache.spark.sql.connector.read.PartitionReader;
import org.apache.spark.sql.execution.vectorized.OnHeapColumnVector;
import org.apache.spark.sql.types.StructField;
import org.apache.spark.sql.types.StructType;
import org.apache.spark.sql.vectorized.ColumnVector;
import org.apache.spark.sql.vectorized.ColumnarBatch;

/** One partition's answer, block by block: each Native block becomes one ColumnarBatch. */
public final class NativeReader implements PartitionReader<ColumnarBatch> {
  private final StructType schema;
  private final NativeHttp http;
  private final NativeSource.Part part;
  private final NativeColumn[] columns;
  private final String[] names;
  private InputStream body;
  private NativeInput in;
  private OnHeapColumnVector[] vectors;
  private int capacity;
  private ColumnarBatch batch;

  NativeReader(StructType schema, String[] chTypes, NativeHttp http, NativeSource.Part part) {
    this.schema = schema;
    this.http = http;
    this.part = part;
    StructField[] fields = schema.fields();
    this.columns = new NativeColumn[fields.length];
    this.names = new String[fields.length];
    for (int i = 0; i < fields.length; i++) {
      columns[i] = NativeColumn.of(chTypes[i]);
      names[i] = fields[i].name();
    }
  }

  @Override
  public boolean next() throws IOException {
    if (in == null) {
      body = http.post(part.sql() + "\nFORMAT Native");
      in = new NativeInput(body, 1 << 20);
    }
    while (!in.atEnd()) {
      long at = in.position();
      in.mark(); // until the block's first column is known to be the scan's: what to quote if not
      int rows;
      try {
        long ncols = in.readVarUInt();
        if (ncols != columns.length) {
          throw broken(at, "a block of " + ncols + " columns where the scan has " + columns.length);
        }
        rows = in.readLength("a block of rows", 1L << 28);
      } catch (EOFException | NativeBroken e) {
        throw e instanceof NativeBroken ? (NativeBroken) e : broken(at, e.getMessage());
      } catch (IOException garbage) {
        throw broken(at, garbage.getMessage());
      }
      ensureCapacity(rows);
      for (int i = 0; i < columns.length; i++) {
        String name;
        String type;
        try {
          name = in.readString(1 << 16);
          type = in.readString(1 << 16);
        } catch (IOException e) {
          throw i == 0 ? broken(at, e.getMessage()) : e;
        }
        if (!name.equals(names[i]) || !type.equals(columns[i].chType)) {
          throw broken(at, "column " + name + " " + type + " where the scan has " + names[i] + " "
              + columns[i].chType);
        }
        in.unmark();
        columns[i].read(in, rows, vectors[i]);
      }
      if (rows > 0) {
        batch.setNumRows(rows);
        return true;
      }
    }
    return false;
  }

  private NativeBroken broken(long at, String what) {
    String tail = in.tail(2048).trim();
    in.unmark();
    return new NativeBroken("ClickHouse's Native answer for partition " + part.index() + " from "
        + http.endpoint + " broke off at byte " + at + " (" + what + ")"
        + (tail.isEmpty() ? "" : "; what followed: " + tail));
  }

  private void ensureCapacity(int rows) {
    if (vectors != null && rows <= capacity) {
      for (OnHeapColumnVector v : vectors) {
        v.reset();
      }
      return;
    }
    closeVectors();
    capacity = Math.max(rows, 1024);
    vectors = OnHeapColumnVector.allocateColumns(capacity, schema);
    batch = new ColumnarBatch(vectors);
  }

  @Override
  public ColumnarBatch get() {
    return batch;
  }

  private void closeVectors() {
    if (vectors != null) {
      for (ColumnVector v : vectors) {
        v.close();
      }
      vectors = null;
    }
  }

  @Override
  public void close() throws IOException {
    closeVectors();
    if (body != null) {
      body.close();
    }
  }
}

/** An answer that stopped being the scan's Native blocks (cut, garbled, or an error's text). */
final class NativeBroken extends IOException {
  private static final long serialVersionUID = 1L;

  NativeBroken(String message) {
    super(message);
  }
}
