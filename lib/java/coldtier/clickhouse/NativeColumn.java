package coldtier.clickhouse;

import java.io.IOException;
import java.nio.ByteOrder;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.spark.sql.execution.vectorized.WritableColumnVector;
import org.apache.spark.sql.types.DataType;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.DecimalType;

/**
 * One ClickHouse column type in the Native format: the Spark type it becomes and how a block's
 * values of it are decoded into a Spark column vector. Only the types coldtier's wire projection
 * produces are here (integers, floats, Bool, decimals, strings, dates as day numbers, Nullable of
 * those); anything else is refused by name when the scan is planned.
 */
abstract class NativeColumn {
  private static final Pattern NULLABLE = Pattern.compile("^Nullable\\((.*)\\)$");
  private static final Pattern LOW_CARDINALITY = Pattern.compile("^LowCardinality\\((.*)\\)$");
  private static final Pattern DECIMAL = Pattern.compile("^Decimal\\(\\s*(\\d+)\\s*,\\s*(\\d+)\\s*\\)$");
  private static final Pattern DECIMAL_N = Pattern.compile("^Decimal(32|64|128)\\(\\s*(\\d+)\\s*\\)$");
  private static final Pattern FIXED_STRING = Pattern.compile("^FixedString\\(\\s*(\\d+)\\s*\\)$");
  private static final boolean LITTLE = ByteOrder.nativeOrder() == ByteOrder.LITTLE_ENDIAN;

  final String chType;
  final DataType sparkType;

  NativeColumn(String chType, DataType sparkType) {
    this.chType = chType;
    this.sparkType = sparkType;
  }

  abstract void read(NativeInput in, int rows, WritableColumnVector v) throws IOException;

  static NativeColumn of(String chType) {
    String t = chType.trim();
    Matcher m = NULLABLE.matcher(t);
    if (m.matches()) {
      return new Nullable(t, of(m.group(1)));
    }
    switch (t) {
      case "Int8":
        return fixed(t, DataTypes.ByteType, 1, (v, row, n, b, p) -> v.putBytes(row, n, b, p));
      case "UInt8":
        return fixed(t, DataTypes.ShortType, 1, (v, row, n, b, p) -> {
          for (int i = 0; i < n; i++) {
            v.putShort(row + i, (short) (b[p + i] & 0xFF));
          }
        });
      case "Bool":
        return fixed(t, DataTypes.BooleanType, 1, (v, row, n, b, p) -> {
          for (int i = 0; i < n; i++) {
            v.putBoolean(row + i, b[p + i] != 0);
          }
        });
      case "Int16":
        return fixed(t, DataTypes.ShortType, 2, (v, row, n, b, p) -> {
          if (LITTLE) {
            v.putShorts(row, n, b, p);
          } else {
            for (int i = 0; i < n; i++) {
              v.putShort(row + i, (short) le16(b, p + 2 * i));
            }
          }
        });
      case "UInt16":
      case "Date":
        return fixed(t, DataTypes.IntegerType, 2, (v, row, n, b, p) -> {
          for (int i = 0; i < n; i++) {
            v.putInt(row + i, le16(b, p + 2 * i));
          }
        });
      case "Int32":
      case "Date32":
        return fixed(t, DataTypes.IntegerType, 4, (v, row, n, b, p) -> v.putIntsLittleEndian(row, n, b, p));
      case "UInt32":
        return fixed(t, DataTypes.LongType, 4, (v, row, n, b, p) -> {
          for (int i = 0; i < n; i++) {
            v.putLong(row + i, le32(b, p + 4 * i) & 0xFFFFFFFFL);
          }
        });
      case "Int64":
        return fixed(t, DataTypes.LongType, 8, (v, row, n, b, p) -> v.putLongsLittleEndian(row, n, b, p));
      case "UInt64":
        // as decimal(20,0), which is what Spark's JDBC reader makes of it: every value exact
        return fixed(t, DataTypes.createDecimalType(20, 0), 8, (v, row, n, b, p) -> {
          byte[] be = new byte[9];
          for (int i = 0; i < n; i++) {
            for (int j = 0; j < 8; j++) {
              be[8 - j] = b[p + 8 * i + j];
            }
            v.putByteArray(row + i, be, 0, 9);
          }
        });
      case "Float32":
        return fixed(t, DataTypes.FloatType, 4, (v, row, n, b, p) -> v.putFloatsLittleEndian(row, n, b, p));
      case "Float64":
        return fixed(t, DataTypes.DoubleType, 8, (v, row, n, b, p) -> v.putDoublesLittleEndian(row, n, b, p));
      case "String":
        return new Strings(t, DataTypes.StringType);
      default:
        break;
    }
    m = DECIMAL.matcher(t);
    if (m.matches()) {
      return decimal(t, Integer.parseInt(m.group(1)), Integer.parseInt(m.group(2)));
    }
    m = DECIMAL_N.matcher(t);
    if (m.matches()) {
      int bits = Integer.parseInt(m.group(1));
      return decimal(t, bits == 32 ? 9 : bits == 64 ? 18 : 38, Integer.parseInt(m.group(2)));
    }
    m = FIXED_STRING.matcher(t);
    if (m.matches()) {
      int width = Integer.parseInt(m.group(1));
      return fixed(t, DataTypes.BinaryType, width, (v, row, n, b, p) -> {
        for (int i = 0; i < n; i++) {
          v.putByteArray(row + i, b, p + width * i, width);
        }
      });
    }
    throw new IllegalArgumentException("the ClickHouse type " + t + " has no Native decoder here "
        + "(coldtier's wire projection sends integers, floats, Bool, Decimal up to 38 digits, "
        + "strings and Nullable of those)");
  }

  private static NativeColumn decimal(String t, int precision, int scale) {
    DecimalType type = DataTypes.createDecimalType(precision, scale);
    if (precision <= 9) {
      return fixed(t, type, 4, (v, row, n, b, p) -> v.putIntsLittleEndian(row, n, b, p));
    }
    if (precision <= 18) {
      return fixed(t, type, 8, (v, row, n, b, p) -> v.putLongsLittleEndian(row, n, b, p));
    }
    if (precision <= 38) {
      return fixed(t, type, 16, (v, row, n, b, p) -> {
        byte[] be = new byte[16];
        for (int i = 0; i < n; i++) {
          for (int j = 0; j < 16; j++) {
            be[15 - j] = b[p + 16 * i + j];
          }
          v.putByteArray(row + i, be, 0, 16);
        }
      });
    }
    throw new IllegalArgumentException("the ClickHouse type " + t + " has more digits than Spark's "
        + "decimal holds (38)");
  }

  /**
   * The type without a top-level LowCardinality wrapper (its Native form is a dictionary and
   * indexes, which the scan does not decode: such a column is CAST to this type by the query).
   */
  static String plain(String chType) {
    Matcher lc = LOW_CARDINALITY.matcher(chType.trim());
    return lc.matches() ? lc.group(1).trim() : chType.trim();
  }

  static int le16(byte[] b, int p) {
    return (b[p] & 0xFF) | (b[p + 1] & 0xFF) << 8;
  }

  static int le32(byte[] b, int p) {
    return (b[p] & 0xFF) | (b[p + 1] & 0xFF) << 8 | (b[p + 2] & 0xFF) << 16 | (b[p + 3] & 0xFF) << 24;
  }

  interface Put {
    void put(WritableColumnVector v, int row, int count, byte[] buf, int pos);
  }

  private static NativeColumn fixed(String t, DataType type, int width, Put put) {
    return new NativeColumn(t, type) {
      @Override
      void read(NativeInput in, int rows, WritableColumnVector v) throws IOException {
        in.readFixed(rows, width, (row, n, b, p) -> put.put(v, row, n, b, p));
      }
    };
  }

  private static final class Strings extends NativeColumn {
    Strings(String t, DataType type) {
      super(t, type);
    }

    @Override
    void read(NativeInput in, int rows, WritableColumnVector v) throws IOException {
      NativeInput.FixedRun put = (row, n, b, p) -> v.putByteArray(row, b, p, n);
      for (int row = 0; row < rows; row++) {
        in.readBytes(row, put);
      }
    }
  }

  private static final class Nullable extends NativeColumn {
    private final NativeColumn inner;
    private byte[] nulls = new byte[0];

    Nullable(String t, NativeColumn inner) {
      super(t, inner.sparkType);
      this.inner = inner;
    }

    @Override
    void read(NativeInput in, int rows, WritableColumnVector v) throws IOException {
      if (nulls.length < rows) {
        nulls = new byte[rows];
      }
      byte[] map = nulls;
      in.readFixed(rows, 1, (row, n, b, p) -> System.arraycopy(b, p, map, row, n));
      inner.read(in, rows, v);
      for (int row = 0; row < rows; row++) {
        if (map[row] != 0) {
          v.putNull(row);
        }
      }
    }
  }
}
